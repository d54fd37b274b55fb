"""A queue's policy (its TaskQueue) in the `config` hash, as every script reads it: pause, rate
limit, queue-wide maxConcurrent, default retry, retention; against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import pytest
import redis.asyncio as aioredis

import taskorch
from taskorch.queue import keys
from taskorch.queue.broker import Broker
from taskorch.queue.connection import RedisClient
from taskorch.queue.model import Outcome, Settlement, State, TaskRequest
from taskorch.queue.policy import QueuePolicy
from taskorch.supervise import LoopEnded
from taskorch.worker.runner import Worker
from tests.support import async_wait_for

NS, Q = "team-p", "default"


@pytest.fixture
async def aredis(any_redis: RedisClient) -> RedisClient:
    """Every test here runs on one redis-server and on a Redis Cluster."""
    return any_redis


@pytest.fixture
async def broker(aredis: aioredis.Redis) -> Broker:
    return Broker(aredis)


async def enqueue(broker: Broker, count: int) -> list[str]:
    return await broker.enqueue_many(NS, Q, [TaskRequest("t") for _ in range(count)])


async def claim(broker: Broker, n: int, worker: str = "w") -> list[str]:
    result = await broker.settle_claim(NS, Q, worker, [], n)
    return [c.id for c in result.claimed]


@asynccontextmanager
async def serving(*workers: Worker) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield
    finally:
        for w in workers:
            w.drain()
            w._stop_all("release")
        for t in tasks:
            with suppress(LoopEnded):
                await asyncio.wait_for(t, 10)


async def test_pause_stops_claims_and_resume_wakes_a_worker(broker: Broker) -> None:
    await enqueue(broker, 2)
    await broker.configure(NS, Q, QueuePolicy(paused=True))
    result = await broker.settle_claim(NS, Q, "w", [], 5)
    assert result.claimed == [] and result.next_due_in_ms is None  # sleep until woken
    await broker.redis.delete(keys.marker(NS, Q))
    await broker.configure(NS, Q, QueuePolicy(paused=False))
    assert await broker.redis.llen(keys.marker(NS, Q)) == 1  # the resume woke a worker
    assert len(await claim(broker, 5)) == 2
    # the CLI's pause without a TaskQueue writes the same field
    await broker.pause(NS, Q)
    assert (await broker.config(NS, Q))["paused"] == "1"
    await broker.resume(NS, Q)
    assert "paused" not in await broker.config(NS, Q)


async def test_the_rate_limit_is_a_token_bucket_in_redis_time(broker: Broker) -> None:
    await enqueue(broker, 20)
    await broker.configure(NS, Q, QueuePolicy(rate_tasks=5, rate_per_seconds=1))
    assert len(await claim(broker, 10)) == 5  # one period's worth saved up
    limited = await broker.settle_claim(NS, Q, "w", [], 10)
    assert limited.claimed == []
    # the worker is told when the next token comes (200 ms at 5/s), instead of polling
    assert limited.next_due_in_ms is not None and 0 < limited.next_due_in_ms <= 200
    # 600 ms later (moved back in the bucket instead of slept): 3 tokens
    bucket = keys.rate(NS, Q)
    await broker.redis.hincrby(bucket, "ms", -600)
    assert len(await claim(broker, 10)) == 3
    # however long it was idle, no more than one period's worth at once
    await broker.redis.hincrby(bucket, "ms", -60_000)
    assert len(await claim(broker, 10)) == 5


async def test_max_concurrent_caps_running_tasks_across_workers(broker: Broker) -> None:
    await enqueue(broker, 10)
    await broker.configure(NS, Q, QueuePolicy(max_concurrent=3))
    first = await broker.settle_claim(NS, Q, "w1", [], 2)
    assert len(first.claimed) == 2
    assert len(await claim(broker, 5, "w2")) == 1
    assert await claim(broker, 5, "w3") == []
    # a settlement frees a slot and wakes a blocked worker for it
    await broker.redis.delete(keys.marker(NS, Q))
    c = first.claimed[0]
    done = await broker.settle_claim(NS, Q, "w1", [Settlement(c.id, c.fence, Outcome.ok, "1")], 0)
    assert done.claimed == [] and await broker.redis.llen(keys.marker(NS, Q)) == 1
    assert len(await claim(broker, 5, "w3")) == 1


async def test_result_retention_and_dlq_bounds_come_from_the_queue(broker: Broker) -> None:
    await broker.configure(NS, Q, QueuePolicy(result_retention_seconds=60, dlq_cap=1))
    await enqueue(broker, 3)
    claimed = (await broker.settle_claim(NS, Q, "w", [], 3)).claimed
    ok, *dead = claimed
    settlements = [Settlement(ok.id, ok.fence, Outcome.ok, "1")]
    settlements += [Settlement(d.id, d.fence, Outcome.dead, "{}") for d in dead]
    await broker.settle_claim(NS, Q, "w", settlements, 0)
    assert 0 < await broker.redis.ttl(keys.task(NS, Q, ok.id)) <= 60
    # the cap of 1 holds (both were dead-lettered in the same millisecond: either may stay)
    kept = await broker.redis.zrange(keys.dead(NS, Q), 0, -1)
    assert len(kept) == 1 and kept[0].decode() in {d.id for d in dead}


async def test_a_queue_without_a_policy_falls_back_to_the_defaults(broker: Broker) -> None:
    await broker.configure(NS, Q, QueuePolicy(max_concurrent=1))
    await broker.configure(NS, Q, None)  # the TaskQueue was deleted
    assert await broker.config(NS, Q) == {}
    await enqueue(broker, 3)
    assert len(await claim(broker, 3)) == 3


async def test_the_queue_default_retry_applies_to_tasks_and_handlers_without_one(
    broker: Broker,
) -> None:
    await broker.configure(
        NS, Q, QueuePolicy(default_retry={"maxAttempts": 2, "initialDelay": "0s", "jitter": False})
    )
    app = taskorch.App()

    @app.handler("t")
    async def fails(ctx: taskorch.Context) -> None:
        raise RuntimeError("always")

    @app.handler("own", retry=taskorch.Retry(max_attempts=4, initial_delay=0, jitter=False))
    async def fails_too(ctx: taskorch.Context) -> None:
        raise RuntimeError("always")

    [plain] = await enqueue(broker, 1)
    [own] = await broker.enqueue_many(NS, Q, [TaskRequest("own")])
    async with serving(Worker(app, broker, namespace=NS, queues=Q)):

        async def both_dead() -> bool:
            infos = [await broker.get(NS, Q, i) for i in (plain, own)]
            return all(i is not None and i.state is State.dead for i in infos)

        await async_wait_for(both_dead, what="both tasks to run out of attempts")
    attempts = [(await broker.get(NS, Q, i)).attempt for i in (plain, own)]  # type: ignore[union-attr]
    assert attempts == [2, 4]  # the queue's default, then the handler's own policy


async def test_rate_limited_workers_hold_the_rate(broker: Broker) -> None:
    """Two workers draining a queue limited to 20 tasks a second: over the 3 s after the
    saved-up burst, the claims hold 20/s within 10 %."""
    await broker.configure(NS, Q, QueuePolicy(rate_tasks=20, rate_per_seconds=1))
    app = taskorch.App()

    @app.handler("t")
    async def noop(ctx: taskorch.Context) -> None:
        return None

    ids = await enqueue(broker, 110)
    workers = [Worker(app, broker, namespace=NS, queues=Q, concurrency=8) for _ in range(2)]
    async with serving(*workers):

        async def starts() -> list[int] | None:
            infos = [await broker.get(NS, Q, i) for i in ids]
            started = sorted(i.started_ms for i in infos if i and i.started_ms)
            return started if started and started[-1] - started[0] >= 4000 else None

        started = await async_wait_for(starts, timeout=20, what="4 s of rate-limited claims")
    window_start = started[0] + 1000  # past the burst of one period's tokens
    in_window = [s for s in started if window_start <= s < window_start + 3000]
    assert 54 <= len(in_window) <= 66, len(in_window)
