"""Huey (RedisHuey: LPUSH / blocking BRPOP). Settings from Huey's consumer docs (docs/consumer.rst:
`-k process` for multi-process workers, as in its `-w 4 -k process` example; threads, the default
worker type, for work that waits). The no-op run is one consumer with `-k process -w 2` (2 worker
processes; the consumer parent only schedules and supervises); the I/O run is 2 consumers with
`-k thread -w 32` each. `-n`: no periodic-task scheduling, `-q`: errors only (no per-task log
lines). results=False: nothing stored, as the other peers ignore results. Huey has no bulk
enqueue (task.map() enqueues one by one): one LPUSH per task."""

from __future__ import annotations

import time
from pathlib import Path

from huey import RedisHuey

from bench.common import REDIS_URL, SLEEP_S, task_done
from bench.peers import same_redis

THREADS_IO = 32
CONFIG = "2 worker processes (-k process -w 2), one LPUSH per task"
CONFIG_IO = f"2 processes × {THREADS_IO} threads (-k thread -w {THREADS_IO}), one LPUSH per task"

huey = RedisHuey("bench", url=REDIS_URL, results=False)


@huey.task()
def noop(payload: int) -> None:
    if SLEEP_S:
        time.sleep(SLEEP_S)
    task_done()


def enqueue(url: str, n: int) -> None:
    same_redis(url, REDIS_URL)
    for i in range(n):
        noop(i)


def worker_commands(venv_bin: Path, url: str, io: bool) -> list[list[str]]:
    cmd = [str(venv_bin / "huey_consumer"), "bench.peers.huey_app.huey", "-n", "-q"]
    if io:
        return [[*cmd, "-k", "thread", "-w", str(THREADS_IO)]] * 2
    return [[*cmd, "-k", "process", "-w", "2"]]
