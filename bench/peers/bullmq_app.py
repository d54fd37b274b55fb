"""BullMQ for Python (PyPI `bullmq`, the port of BullMQ's Lua scripts). BullMQ publishes no
Python benchmark; settings from its docs (docs.bullmq.io/python/introduction, guide/workers/
concurrency): one Worker per process with a local `concurrency`, here 32 (64 for the I/O run),
and Queue.addBulk for enqueue (one MULTI pipeline per 1000 jobs). Jobs use removeOnComplete
(BullMQ's recommended production option: no completed-job hash kept), as the other peers ignore
results. Python BullMQ has no worker CLI: each process is `python -m bench.peers.bullmq_app`,
the docs' pattern (create the Worker, wait for SIGTERM/SIGINT, worker.close()). A graceful
close waits out the worker's idle long-poll (drainDelay, 5 s): expect ~5 s to stop."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from bullmq import Queue, Worker

from bench.common import REDIS_URL, SLEEP_S, task_done

CONCURRENCY, CONCURRENCY_IO = 32, 64
QUEUE = "bench"
CONFIG = f"2 processes × concurrency {CONCURRENCY}, addBulk (1000/pipeline), removeOnComplete"
CONFIG_IO = f"2 processes × concurrency {CONCURRENCY_IO}, addBulk (1000/pipeline), removeOnComplete"


async def noop(job: Any, token: str) -> None:
    if SLEEP_S:
        await asyncio.sleep(SLEEP_S)
    task_done()


def enqueue(url: str, n: int) -> None:
    async def go() -> None:
        queue = Queue(QUEUE, {"connection": url})
        try:
            for start in range(0, n, 1000):
                await queue.addBulk(
                    [
                        {"name": "noop", "data": i, "opts": {"removeOnComplete": True}}
                        for i in range(start, min(n, start + 1000))
                    ]
                )
        finally:
            await queue.close()

    asyncio.run(go())


async def _work(concurrency: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(QUEUE, noop, {"connection": REDIS_URL, "concurrency": concurrency})
    await stop.wait()
    await worker.close()


def worker_commands(venv_bin: Path, url: str, io: bool) -> list[list[str]]:
    cmd = [str(venv_bin / "python"), "-m", "bench.peers.bullmq_app", *(["--io"] if io else [])]
    return [cmd, cmd]


if __name__ == "__main__":
    asyncio.run(_work(CONCURRENCY_IO if "--io" in sys.argv[1:] else CONCURRENCY))
