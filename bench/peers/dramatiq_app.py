"""Dramatiq (Redis broker). Settings: the no-op run keeps the bench's original 2 processes × 8
threads (Dramatiq's default thread count); the I/O run raises `--threads` to 32 per process, so
that 2 × 32 handlers can wait on I/O at once. Retries off (max_retries=0)."""

from __future__ import annotations

import time
from pathlib import Path

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.common import REDIS_URL, SLEEP_S, task_done
from bench.peers import same_redis

THREADS, THREADS_IO = 8, 32
CONFIG = f"2 processes × {THREADS} threads, send() per task"
CONFIG_IO = f"2 processes × {THREADS_IO} threads, send() per task"

dramatiq.set_broker(RedisBroker(url=REDIS_URL))


@dramatiq.actor(max_retries=0)
def noop(payload: object) -> None:
    if SLEEP_S:
        time.sleep(SLEEP_S)
    task_done()


def enqueue(url: str, n: int) -> None:
    """send() per task: Dramatiq has no bulk enqueue (group() sends one message per task)."""
    same_redis(url, REDIS_URL)
    for i in range(n):
        noop.send(i)


def worker_commands(venv_bin: Path, url: str, io: bool) -> list[list[str]]:
    threads = THREADS_IO if io else THREADS
    return [
        [
            str(venv_bin / "dramatiq"),
            "bench.peers.dramatiq_app",
            "--processes",
            "2",
            "--threads",
            str(threads),
        ]
    ]
