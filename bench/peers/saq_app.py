"""SAQ (Simple Async Queue, Redis). Settings: concurrency 32 per worker, as in streaQ's published
benchmark of SAQ (tastyware/streaq benchmarks/bench_saq.py; SAQ's own benchmarks/simple.py uses 10,
then 20 concurrent enqueues); the I/O run uses concurrency 64. SAQ has no bulk enqueue: enqueue()
calls gathered 1000 at a time, which SAQ's RedisQueue throttles to 20 in flight
(max_concurrent_ops). Jobs keep no result (ttl=-1: deleted when done), as the other peers ignore
results. Two `saq` processes (not `--workers 2`, whose extra process is a multiprocessing child a
SIGTERM to the parent does not reach). `--quiet`: no per-job logging set up.
Known SAQ race (tobymao/saq#124, #277): a worker's first sweep, at start-up, can "sweep" jobs
that a worker (itself included) has just moved to the active list but not yet marked active;
with a pre-filled queue it logs "Upkeep task failed unexpectedly ... doesn't exist" now and then
(seen: the counter still ended at exactly n)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from saq import Queue

from bench.common import REDIS_URL, SLEEP_S, task_done

CONCURRENCY, CONCURRENCY_IO = 32, 64
QUEUE = "bench"
CONFIG = f"2 processes × concurrency {CONCURRENCY}, enqueue() gathered 1000 at a time"
CONFIG_IO = f"2 processes × concurrency {CONCURRENCY_IO}, enqueue() gathered 1000 at a time"


async def noop(ctx: dict[str, Any], *, payload: int) -> None:
    if SLEEP_S:
        await asyncio.sleep(SLEEP_S)
    task_done()


settings = {
    "queue": Queue.from_url(REDIS_URL, name=QUEUE),
    "functions": [noop],
    "concurrency": CONCURRENCY,
}
settings_io = {**settings, "concurrency": CONCURRENCY_IO}


def enqueue(url: str, n: int) -> None:
    async def go() -> None:
        queue = Queue.from_url(
            url, name=QUEUE
        )  # fresh per call: the harness may call from several loops
        await queue.connect()
        try:
            for start in range(0, n, 1000):
                await asyncio.gather(
                    *(
                        queue.enqueue("noop", payload=i, ttl=-1)
                        for i in range(start, min(n, start + 1000))
                    )
                )
        finally:
            await queue.disconnect()

    asyncio.run(go())


def worker_commands(venv_bin: Path, url: str, io: bool) -> list[list[str]]:
    cmd = [
        str(venv_bin / "saq"),
        f"bench.peers.saq_app.{'settings_io' if io else 'settings'}",
        "--quiet",
    ]
    return [cmd, cmd]
