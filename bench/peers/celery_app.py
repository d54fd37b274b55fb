"""Celery (Redis broker). Settings: the no-op run keeps the bench's original `-P solo` (no pool
hand-off: the fastest pool for a handler that does no I/O); the I/O run uses the threads pool
(`-P threads`, stdlib only: eventlet/gevent would add packages), 16 threads per process.
Results are ignored (task_ignore_result), as for every peer."""

from __future__ import annotations

import time
from pathlib import Path

from celery import Celery

from bench.common import REDIS_URL, SLEEP_S, task_done
from bench.peers import same_redis

THREADS_IO = 16
CONFIG = "2 processes, solo pool (fastest for no-op), delay() per task"
CONFIG_IO = f"2 processes × {THREADS_IO} threads (-P threads), delay() per task"

app = Celery("bench", broker=REDIS_URL)
app.conf.update(
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="noop")
def noop(payload: object) -> None:
    if SLEEP_S:
        time.sleep(SLEEP_S)
    task_done()


def enqueue(url: str, n: int) -> None:
    """delay() per task: Celery has no bulk publish (a group() still sends one message per task)."""
    same_redis(url, REDIS_URL)
    for i in range(n):
        noop.delay(i)


def worker_commands(venv_bin: Path, url: str, io: bool) -> list[list[str]]:
    pool = ["-P", "threads", "-c", str(THREADS_IO)] if io else ["-P", "solo"]
    cmd = [
        str(venv_bin / "celery"),
        "-A",
        "bench.peers.celery_app",
        "worker",
        *pool,
        "-l",
        "warning",
    ]
    return [cmd, cmd]
