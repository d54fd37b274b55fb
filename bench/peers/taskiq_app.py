"""taskiq with taskiq-redis's RedisStreamBroker (XADD / XREADGROUP + XACK: acknowledged, like the
other peers' reliable queues). Settings from streaQ's published benchmark of taskiq
(tastyware/streaq benchmarks/bench_taskiq.py and README): RedisStreamBroker(xread_count=32) and
`taskiq worker --max-async-tasks 32 --max-prefetch 32`; here also `--no-parse` (taskiq's
documented switch that skips pydantic parsing of the arguments) and no result backend (the
default dummy one). The I/O run uses --max-async-tasks 64 --max-prefetch 64. taskiq has no bulk
enqueue: kiq() calls gathered 1000 at a time. One argv, `--workers 2`: taskiq's own process
manager starts the 2 worker processes and stops them on SIGTERM."""

from __future__ import annotations

import asyncio
from pathlib import Path

from taskiq_redis import RedisStreamBroker

from bench.common import REDIS_URL, SLEEP_S, task_done

ASYNC_TASKS, ASYNC_TASKS_IO = 32, 64
QUEUE = "bench"
_SETTINGS = (
    "2 processes × max-async-tasks {0} (max-prefetch {0}, xread_count 32), "
    "kiq() gathered 1000 at a time"
)
CONFIG = _SETTINGS.format(ASYNC_TASKS)
CONFIG_IO = _SETTINGS.format(ASYNC_TASKS_IO)


def _broker(url: str) -> RedisStreamBroker:
    # consumer_id "0": a consumer group created after the stream was filled still reads it all.
    return RedisStreamBroker(url, queue_name=QUEUE, consumer_id="0", xread_count=32)


broker = _broker(REDIS_URL)


async def noop(payload: int) -> None:
    if SLEEP_S:
        await asyncio.sleep(SLEEP_S)
    task_done()


broker.register_task(noop, task_name="noop")


def enqueue(url: str, n: int) -> None:
    async def go() -> None:
        b = _broker(url)  # fresh per call: a broker's connection pool is bound to one event loop
        task = b.register_task(noop, task_name="noop")
        await b.startup()
        try:
            for start in range(0, n, 1000):
                await asyncio.gather(*(task.kiq(i) for i in range(start, min(n, start + 1000))))
        finally:
            await b.shutdown()

    asyncio.run(go())


def worker_commands(venv_bin: Path, url: str, io: bool) -> list[list[str]]:
    c = str(ASYNC_TASKS_IO if io else ASYNC_TASKS)
    return [
        [
            str(venv_bin / "taskiq"),
            "worker",
            "bench.peers.taskiq_app:broker",
            "--workers",
            "2",
            "--max-async-tasks",
            c,
            "--max-prefetch",
            c,
            "--no-parse",
            "--log-level",
            "WARNING",
        ]
    ]
