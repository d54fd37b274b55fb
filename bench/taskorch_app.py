"""taskorch in the benchmarks, with the interface every peer module has (bench/peers)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

import taskorch
from bench.common import REDIS_URL, SLEEP_S, task_done

# 128 for both: a round trip settles and claims up to a worker's free slots, so more slots
# mean fewer round trips (and fsyncs) per task (bench/README.md)
CONCURRENCY, CONCURRENCY_IO = 128, 128
CONFIG = f"2 processes × concurrency {CONCURRENCY}, batched enqueue (1000/round trip)"
CONFIG_IO = f"2 processes × concurrency {CONCURRENCY_IO}, batched enqueue (1000/round trip)"

app = taskorch.App()
_r = aioredis.Redis.from_url(REDIS_URL)


@app.handler("noop")
async def noop(ctx: taskorch.Context, payload: Any) -> None:
    if SLEEP_S:
        await asyncio.sleep(SLEEP_S)
    task_done()


@app.handler("latency")
async def latency(ctx: taskorch.Context, payload: dict[str, float]) -> None:
    await _r.rpush("bench:latency", time.time() - payload["sent"])


def enqueue(url: str, n: int) -> None:
    async def go() -> None:
        async with taskorch.Client(url, namespace="bench") as c:
            await c.enqueue_many("noop", range(n), batch_size=1000)

    asyncio.run(go())


def worker_commands(venv_bin: Path, url: str, io: bool) -> list[list[str]]:
    c = CONCURRENCY_IO if io else CONCURRENCY
    cmd = [
        str(venv_bin / "taskorch"),
        "worker",
        "--app",
        "bench.taskorch_app:app",
        "-c",
        str(c),
        "-n",
        "bench",
    ]
    return [cmd, cmd]
