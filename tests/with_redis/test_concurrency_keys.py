"""Concurrency keys in the queue scripts, against a real redis-server: at most maxConcurrent
tasks of a key hold a slot (ready, running or waiting for a retry), FIFO within the key; other
keys and plain tasks are never blocked."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from taskorch.queue.broker import Broker
from taskorch.queue.connection import RedisClient
from taskorch.queue.model import Outcome, Settlement, State, TaskRequest
from taskorch.queue.policy import QueuePolicy

NS, Q = "team-ck", "default"
ERR = json.dumps({"type": "E", "reason": "HandlerError"})


@pytest.fixture
async def aredis(any_redis: RedisClient) -> RedisClient:
    """Every test here runs on one redis-server and on a Redis Cluster."""
    return any_redis


@pytest.fixture
async def broker(aredis: aioredis.Redis) -> Broker:
    return Broker(aredis)


def keyed(task_id: str, key: str, n: int = 1) -> TaskRequest:
    return TaskRequest("t", id=task_id, concurrency_key=key, max_concurrent=n)


async def claim(broker: Broker, n: int = 10) -> dict[str, str]:
    _, claimed, _, _ = await broker.settle_claim(NS, Q, "w", [], n)
    return {c.id: c.fence for c in claimed}


async def settle(
    broker: Broker, task_id: str, fence: str, outcome: Outcome, data: str = "1"
) -> None:
    await broker.settle_claim(NS, Q, "w", [Settlement(task_id, fence, outcome, data)], 0)


async def test_one_at_a_time_in_order_and_other_keys_run_freely(broker: Broker) -> None:
    await broker.enqueue_many(
        NS,
        Q,
        [
            keyed("a1", "A"),
            keyed("a2", "A"),
            keyed("b1", "B"),
            TaskRequest("t", id="plain"),
            keyed("a3", "A"),
        ],
    )
    first = await claim(broker)
    assert sorted(first) == ["a1", "b1", "plain"]
    assert await claim(broker) == {}  # a2 waits for a1's slot
    await settle(broker, "a1", first["a1"], Outcome.ok)
    second = await claim(broker)
    assert list(second) == ["a2"]
    # a failed attempt keeps the slot: its retry runs before a3
    await broker.settle_claim(
        NS, Q, "w", [Settlement("a2", second["a2"], Outcome.retry, ERR, 0)], 0
    )
    again = await claim(broker)
    assert list(again) == ["a2"]
    await broker.settle_claim(NS, Q, "w", [Settlement("a2", again["a2"], Outcome.dead, ERR)], 0)
    assert list(await claim(broker)) == ["a3"]  # a dead task frees the slot


async def test_max_concurrent_and_cancel_free_or_skip_slots(broker: Broker) -> None:
    await broker.enqueue_many(NS, Q, [keyed(f"c{i}", "C", 2) for i in range(5)])
    running = await claim(broker)
    assert sorted(running) == ["c0", "c1"]
    assert await broker.cancel(NS, Q, "c2") == "queued"  # waiting: dropped when its turn comes
    assert await broker.cancel(NS, Q, "c0") == "active"
    _lost, cancels = await broker.extend(NS, Q, [("c0", running["c0"], "")], 30)
    assert cancels == ["c0"]
    await settle(broker, "c0", running["c0"], Outcome.cancelled)
    assert list(await claim(broker)) == ["c3"]  # c0's slot, skipping the cancelled c2
    info = await broker.get(NS, Q, "c2")
    assert info is not None and info.state is State.cancelled


async def test_a_requeued_dead_task_waits_for_a_slot_again(broker: Broker) -> None:
    await broker.enqueue_many(NS, Q, [keyed("d1", "D"), keyed("d2", "D")])
    first = await claim(broker)
    await broker.settle_claim(NS, Q, "w", [Settlement("d1", first["d1"], Outcome.dead, ERR)], 0)
    second = await claim(broker)
    assert list(second) == ["d2"]
    assert await broker.requeue_dead(NS, Q, ["d1"]) == ["d1"]
    assert await claim(broker) == {}  # d2 holds the only slot
    await settle(broker, "d2", second["d2"], Outcome.ok)
    assert list(await claim(broker)) == ["d1"]


async def test_a_lost_worker_never_leaves_its_key_blocked(aredis: aioredis.Redis) -> None:
    from taskorch.queue import keys

    broker = Broker(aredis)
    await broker.configure(NS, Q, QueuePolicy(max_recoveries=1))
    await broker.enqueue_many(NS, Q, [keyed("k1", "K"), keyed("k2", "K")])
    first = await claim(broker)
    assert list(first) == ["k1"]
    await aredis.zadd(keys.active(NS, Q), {"k1": 0}, xx=True)  # its worker died: lease expired
    again = await claim(broker)
    assert list(again) == ["k1"], "the recovered task keeps its slot and runs first"
    await aredis.zadd(keys.active(NS, Q), {"k1": 0}, xx=True)  # lost again: past the limit
    after = await claim(broker)
    assert list(after) == ["k2"], "a task dead-lettered as LostWorkerLimit frees its slot"
    info = await broker.get(NS, Q, "k1")
    assert info is not None and info.state is State.dead
