from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

import taskorch
from bench.common import DONE_KEY, REDIS_URL

app = taskorch.App()
_r = aioredis.Redis.from_url(REDIS_URL)


@app.handler("noop")
async def noop(ctx: taskorch.Context, payload: Any) -> None:
    await _r.incr(DONE_KEY)


@app.handler("latency")
async def latency(ctx: taskorch.Context, payload: dict[str, float]) -> None:
    await _r.rpush("bench:latency", time.time() - payload["sent"])
