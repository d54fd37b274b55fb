"""streaQ (Redis streams, coredis). Settings from streaQ's own benchmarks (tastyware/streaq
benchmarks/bench_streaq.py and README): Worker(concurrency=32), `coredis.Config.optimized = True`
(no runtime type checks), tasks enqueued with Worker.enqueue_many (one pipeline). Their benchmark
also uses uvloop, which is not installed here: every asyncio peer runs on the stock event loop. The
I/O run uses concurrency 64. Tasks are silent (no per-task log line) with ttl=0 (no result kept),
as the other peers ignore results. Two `streaq run` processes (not `--workers 2`, whose extra
process is a multiprocessing child that a SIGTERM to the parent does not reach)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import coredis
from streaq import Worker

from bench.common import REDIS_URL, SLEEP_S, task_done

CONCURRENCY, CONCURRENCY_IO = 32, 64
QUEUE = "bench"
CONFIG = f"2 processes × concurrency {CONCURRENCY}, enqueue_many (1000/pipeline)"
CONFIG_IO = f"2 processes × concurrency {CONCURRENCY_IO}, enqueue_many (1000/pipeline)"

coredis.Config.optimized = True
worker = Worker(redis_url=REDIS_URL, queue_name=QUEUE, concurrency=CONCURRENCY)
worker_io = Worker(redis_url=REDIS_URL, queue_name=QUEUE, concurrency=CONCURRENCY_IO)


async def noop(payload: int) -> None:
    if SLEEP_S:
        await asyncio.sleep(SLEEP_S)
    task_done()


for _w in (worker, worker_io):
    _w.task(silent=True, ttl=0, max_tries=1)(noop)


def enqueue(url: str, n: int) -> None:
    async def go() -> None:
        # A fresh client each call (the harness calls enqueue from more than one event loop);
        # tasks by name: the worker side looks "noop" up in its registry.
        client = Worker(redis_url=url, queue_name=QUEUE)
        async with client:
            for start in range(0, n, 1000):
                await client.enqueue_many(
                    [client.enqueue_unsafe("noop", i) for i in range(start, min(n, start + 1000))]
                )

    asyncio.run(go())


def worker_commands(venv_bin: Path, url: str, io: bool) -> list[list[str]]:
    cmd = [
        str(venv_bin / "streaq"),
        "run",
        f"bench.peers.streaq_app:{'worker_io' if io else 'worker'}",
    ]
    return [cmd, cmd]
