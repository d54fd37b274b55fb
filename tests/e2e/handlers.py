"""Handlers the e2e tests run in real worker processes (`--app tests.e2e.handlers:app`)."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import redis
from pydantic import BaseModel
from taskorch_examples import app as examples

import taskorch

app = taskorch.App()
app.include(examples)  # process_image and noop, as the README shows them


class Flaky(BaseModel):
    fail_times: int


@app.handler("flaky")
async def flaky(ctx: taskorch.Context, p: Flaky) -> dict[str, int]:
    if ctx.attempt <= p.fail_times:
        raise RuntimeError(f"planned failure {ctx.attempt} of {p.fail_times}")
    return {"succeeded_on": ctx.attempt}


@app.handler("always_fail")
async def always_fail(ctx: taskorch.Context) -> None:
    raise RuntimeError("this handler always fails")


@app.handler("fail_until_flag")
def fail_until_flag(ctx: taskorch.Context) -> str:
    """Sync on purpose (runs in the thread pool): fails until the test sets flag:<task id>."""
    r = redis.Redis.from_url(os.environ["TASKORCH_REDIS_URL"])
    if not r.exists(f"flag:{ctx.task_id}"):
        raise RuntimeError("flag not set yet")
    return "revived"


class Sleep(BaseModel):
    seconds: float


@app.handler("slow")
async def slow(ctx: taskorch.Context, p: Sleep) -> str:
    await asyncio.sleep(p.seconds)
    return ctx.worker


@app.handler("count")
def count(ctx: taskorch.Context) -> int:
    r = redis.Redis.from_url(os.environ["TASKORCH_REDIS_URL"])
    return int(r.incr(f"runs:{ctx.task_id}"))


class Secretive(BaseModel):
    token: str


@app.handler("token_length")
async def token_length(ctx: taskorch.Context, p: Secretive) -> dict[str, int]:
    """Proves a payloadFrom value arrived without echoing it into the Task's status."""
    return {"length": len(p.token)}


class Size(BaseModel):
    items: int


@app.handler("big_result")
async def big_result(ctx: taskorch.Context, p: Size) -> list[str]:
    return [f"item-{i:05d}" for i in range(p.items)]


class Steps(BaseModel):
    steps: int
    seconds_each: float


@app.handler("steps")
async def steps(ctx: taskorch.Context, p: Steps) -> int:
    for i in range(1, p.steps + 1):
        ctx.progress({"step": i, "of": p.steps})
        await asyncio.sleep(p.seconds_each)
    return p.steps


@app.handler("fail_then_slow")
async def fail_then_slow(ctx: taskorch.Context, p: Sleep) -> str:
    """Fails until the test sets flag:<task id>, then takes `seconds`."""
    r = redis.Redis.from_url(os.environ["TASKORCH_REDIS_URL"])
    if not r.exists(f"flag:{ctx.task_id}"):
        raise RuntimeError("flag not set yet")
    await asyncio.sleep(p.seconds)
    return "late"


class Login(BaseModel):
    token: str
    count: int


@app.handler("login")
async def login(ctx: taskorch.Context, p: Login) -> None:
    """Fails echoing its payloadFrom secret, which must not reach the Task's status."""
    raise PermissionError(f"token {p.token} was refused")


@app.handler("chaos")
def chaos(ctx: taskorch.Context, p: Sleep) -> str:
    """Records every run in a file (it survives Redis restarts and worker kills alike)."""
    with open(os.environ["CHAOS_RUNS_FILE"], "a") as runs:
        runs.write(f"{ctx.task_id}\n")
    time.sleep(p.seconds)
    return ctx.task_id


@app.handler("sleep_sync")
def sleep_sync(ctx: taskorch.Context, p: Sleep) -> None:
    """A sync handler that ignores its timeout: its thread stays busy."""
    time.sleep(p.seconds)


class Number(BaseModel):
    value: int  # not "n": kubectl's YAML 1.1 reads a bare n as false


@app.handler("square")
async def square(ctx: taskorch.Context, p: Number) -> int:
    await asyncio.sleep(0.05)
    return p.value * p.value


class Numbers(BaseModel):
    values: list[int]


@app.handler("total")
async def total(ctx: taskorch.Context, p: Numbers) -> dict[str, int]:
    return {"count": len(p.values), "sum": sum(p.values), "first": p.values[0]}


class Verdict(BaseModel):
    ok: bool


@app.handler("verdict")
async def verdict(ctx: taskorch.Context, p: Verdict) -> dict[str, bool]:
    return {"ok": p.ok}


@app.handler("log_line")
async def log_line(ctx: taskorch.Context) -> str:
    logging.getLogger("handlers").warning("hello from the handler")
    return "logged"


@app.handler("log_line_sync")
def log_line_sync(ctx: taskorch.Context) -> str:
    """Sync: runs in the worker's thread pool, which must carry the attempt's context."""
    logging.getLogger("handlers").warning("hello from the sync handler")
    return "logged"
