"""RQ. Settings: the bench's original SimpleWorker (RQ's documented worker class that runs the job
in the worker process instead of forking a child per job, the fastest). RQ has no concurrency
inside a worker process (worker-pool only adds processes), so with exactly 2 processes the 10 ms
I/O run is capped at 2 / 10 ms = 200 tasks/s by design."""

from __future__ import annotations

import time
from pathlib import Path

import redis
from rq import Queue

from bench.common import SLEEP_S, task_done

QUEUE = "default"
CONFIG = "2 SimpleWorker processes (no fork per job), enqueue_many (1000/pipeline)"
CONFIG_IO = (
    "2 SimpleWorker processes, 1 job at a time each (no in-process concurrency), enqueue_many"
)


def noop(payload: object) -> None:
    if SLEEP_S:
        time.sleep(SLEEP_S)
    task_done()


def enqueue(url: str, n: int) -> None:
    q = Queue(QUEUE, connection=redis.Redis.from_url(url))
    for start in range(0, n, 1000):
        q.enqueue_many(
            [Queue.prepare_data(noop, args=(i,)) for i in range(start, min(n, start + 1000))]
        )


def worker_commands(venv_bin: Path, url: str, io: bool) -> list[list[str]]:
    cmd = [
        str(venv_bin / "rq"),
        "worker",
        "-w",
        "rq.worker.SimpleWorker",
        "--url",
        url,
        "-q",
        QUEUE,
    ]
    return [cmd, cmd]
