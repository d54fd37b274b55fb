"""Every queue script against a real redis-server."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from taskorch.queue import keys
from taskorch.queue.broker import Broker
from taskorch.queue.connection import RedisClient
from taskorch.queue.inspect import Inspector
from taskorch.queue.model import Outcome, Settlement, State, TaskRequest, now_ms
from taskorch.queue.policy import QueuePolicy

NS, Q = "team-a", "default"


@pytest.fixture
async def aredis(any_redis: RedisClient) -> RedisClient:
    """Every test here runs on one redis-server and on a Redis Cluster."""
    return any_redis


@pytest.fixture
async def broker(aredis: aioredis.Redis) -> Broker:
    broker = Broker(aredis)
    await broker.configure(NS, Q, QueuePolicy(max_recoveries=1, dlq_cap=3))
    return broker


async def enqueue(broker: Broker, *reqs: TaskRequest) -> list[str]:
    return await broker.enqueue_many(NS, Q, list(reqs))


async def test_claim_is_strictly_by_priority_then_fifo(broker: Broker) -> None:
    ids = await enqueue(
        broker,
        TaskRequest("t", id="low", priority=2),
        TaskRequest("t", id="normal1", priority=5),
        TaskRequest("t", id="high", priority=8),
        TaskRequest("t", id="normal2", priority=5),
    )
    assert ids == ["low", "normal1", "high", "normal2"]
    _, claimed, _, _ = await broker.settle_claim(NS, Q, "w1", [], 3)
    assert [c.id for c in claimed] == ["high", "normal1", "normal2"]
    assert all(c.attempt == 1 and c.fence == "1" for c in claimed)
    _, rest, _, _ = await broker.settle_claim(NS, Q, "w1", [], 10)
    assert [c.id for c in rest] == ["low"]


async def test_enqueue_is_idempotent_by_id_and_key(broker: Broker) -> None:
    assert await enqueue(broker, TaskRequest("t", id="a")) == ["a"]
    assert await enqueue(broker, TaskRequest("t", id="a")) == ["a"]
    first = await enqueue(broker, TaskRequest("t", id="b", idempotency_key="k"))
    again = await enqueue(broker, TaskRequest("t", id="c", idempotency_key="k"))
    assert first == again == ["b"]
    _, claimed, _, _ = await broker.settle_claim(NS, Q, "w", [], 10)
    assert sorted(c.id for c in claimed) == ["a", "b"]  # each once, "c" never created


async def test_fence_rejects_a_stale_settle(broker: Broker) -> None:
    await enqueue(broker, TaskRequest("t", id="x"))
    _, [first], _, _ = await broker.settle_claim(NS, Q, "zombie", [], 1, lease_seconds=0.001)
    # the lease expires; the next claim reaps it and hands it to another worker
    await broker.redis.zadd(f"{keys.prefix(NS, Q)}active", {"x": 0}, xx=True)
    _, [second], _, _ = await broker.settle_claim(NS, Q, "w2", [], 1)
    assert second.id == "x" and second.fence != first.fence
    rejected, _, _, _ = await broker.settle_claim(
        NS, Q, "zombie", [Settlement("x", first.fence, Outcome.ok, '"stale"')], 0
    )
    assert rejected == ["x"]
    rejected, _, _, _ = await broker.settle_claim(
        NS, Q, "w2", [Settlement("x", second.fence, Outcome.ok, '"fresh"')], 0
    )
    assert rejected == []
    info = await broker.get(NS, Q, "x")
    assert info is not None and info.state is State.succeeded and info.result == "fresh"


async def test_reaper_recovers_expired_lease_without_counting_a_failure(broker: Broker) -> None:
    await enqueue(broker, TaskRequest("t", id="x", retry={"maxAttempts": 1}))
    await broker.settle_claim(NS, Q, "lost", [], 1)
    await broker.redis.zadd(f"{keys.prefix(NS, Q)}active", {"x": 0}, xx=True)
    _, [again], _, _ = await broker.settle_claim(NS, Q, "w2", [], 1)
    assert again.attempt == 2 and again.failures == 0
    info = await broker.get(NS, Q, "x")
    assert info is not None
    assert [h["outcome"] for h in info.history] == ["LostWorker"]
    # max_recoveries=1: losing it a second time dead-letters it
    await broker.redis.zadd(f"{keys.prefix(NS, Q)}active", {"x": 0}, xx=True)
    _, none, _, _ = await broker.settle_claim(NS, Q, "w3", [], 1)
    assert none == []
    info = await broker.get(NS, Q, "x")
    assert info is not None and info.state is State.dead
    assert info.error is not None and info.error["reason"] == "LostWorkerLimit"


async def test_delayed_task_is_promoted_when_due(broker: Broker) -> None:
    await enqueue(broker, TaskRequest("t", id="later", run_at=(now_ms() + 60_000) / 1000))
    await enqueue(broker, TaskRequest("t", id="soon", run_at=(now_ms() - 1) / 1000))
    info = await broker.get(NS, Q, "later")
    assert info is not None and info.state is State.scheduled
    _, claimed, _, _ = await broker.settle_claim(NS, Q, "w", [], 10)
    assert [c.id for c in claimed] == ["soon"]
    await broker.redis.zadd(f"{keys.prefix(NS, Q)}delayed", {"later": 0}, xx=True)
    _, claimed, _, _ = await broker.settle_claim(NS, Q, "w", [], 10)
    assert [c.id for c in claimed] == ["later"]


async def test_retry_then_dead_letter_after_max_attempts(broker: Broker) -> None:
    await enqueue(broker, TaskRequest("t", id="x", retry={"maxAttempts": 2}))
    _, [c], _, _ = await broker.settle_claim(NS, Q, "w", [], 1)
    err = json.dumps({"type": "E", "reason": "HandlerError"})
    await broker.settle_claim(NS, Q, "w", [Settlement("x", c.fence, Outcome.retry, err, 0)], 0)
    info = await broker.get(NS, Q, "x")
    assert info is not None and info.state is State.retrying and info.failures == 1
    _, [c2], _, _ = await broker.settle_claim(NS, Q, "w", [], 1)
    assert c2.attempt == 2
    # the script enforces maxAttempts even if a worker asks for another retry
    await broker.settle_claim(NS, Q, "w", [Settlement("x", c2.fence, Outcome.retry, err, 0)], 0)
    info = await broker.get(NS, Q, "x")
    assert info is not None and info.state is State.dead
    assert await Inspector(broker).dead_ids(NS, Q) == ["x"]
    assert await broker.requeue_dead(NS, Q, ["x"]) == ["x"]
    _, [c3], _, _ = await broker.settle_claim(NS, Q, "w", [], 1)
    assert c3.attempt == 3 and c3.failures == 0


async def test_dlq_is_capped_and_drops_the_oldest(broker: Broker) -> None:
    ids = [f"d{i}" for i in range(5)]
    await enqueue(broker, *(TaskRequest("t", id=i) for i in ids))
    _, claimed, _, _ = await broker.settle_claim(NS, Q, "w", [], 5)
    for c in claimed:
        await broker.settle_claim(NS, Q, "w", [Settlement(c.id, c.fence, Outcome.dead, "{}")], 0)
    assert await Inspector(broker).dead_ids(NS, Q) == ["d2", "d3", "d4"]  # dlq_cap=3
    assert await broker.get(NS, Q, "d0") is None


async def test_cancel_queued_and_flag_running(broker: Broker) -> None:
    await enqueue(broker, TaskRequest("t", id="q"), TaskRequest("t", id="r", priority=9))
    _, [running], _, _ = await broker.settle_claim(NS, Q, "w", [], 1)
    assert running.id == "r"
    assert await broker.cancel(NS, Q, "q") == "queued"
    assert await broker.cancel(NS, Q, "r") == "active"
    lost, cancels = await broker.extend(NS, Q, [("r", running.fence, "")], 30)
    assert lost == [] and cancels == ["r"]
    _, claimed, _, _ = await broker.settle_claim(NS, Q, "w", [], 5)
    assert claimed == []  # the cancelled queued task is never handed out
    info = await broker.get(NS, Q, "q")
    assert info is not None and info.state is State.cancelled


async def test_pause_holds_claims_until_resume(broker: Broker) -> None:
    await enqueue(broker, TaskRequest("t", id="x"))
    await broker.pause(NS, Q)
    assert (await broker.settle_claim(NS, Q, "w", [], 5))[1] == []
    assert (await Inspector(broker).stats(NS, Q)).paused is True
    await broker.resume(NS, Q)
    assert [c.id for c in (await broker.settle_claim(NS, Q, "w", [], 5))[1]] == ["x"]


async def test_events_stream_only_for_notify_tasks(broker: Broker) -> None:
    await enqueue(broker, TaskRequest("t", id="cr", notify=True), TaskRequest("t", id="sdk"))
    await broker.settle_claim(NS, Q, "w", [], 5)
    entries = await broker.redis.xrange(keys.events(NS, Q))
    seen = [(f[b"id"], f[b"state"]) for _, f in entries]
    assert seen == [(b"cr", b"queued"), (b"cr", b"active")]


async def test_queue_is_registered_and_registered_again_after_data_loss(broker: Broker) -> None:
    await enqueue(broker, TaskRequest("t", id="a"))
    assert await Inspector(broker).queues() == [(NS, Q)]
    await broker.redis.flushall()  # Redis came back without its data
    await enqueue(broker, TaskRequest("t", id="b"))
    assert await Inspector(broker).queues() == [(NS, Q)]


async def test_progress_is_stored_with_the_heartbeat_while_the_lease_is_ours(
    broker: Broker,
) -> None:
    await enqueue(broker, TaskRequest("t", id="x"))
    _, [c], _, _ = await broker.settle_claim(NS, Q, "w", [], 1)
    assert await broker.extend(NS, Q, [("x", c.fence, '{"step":1}')], 30) == ([], [])
    info = await broker.get(NS, Q, "x")
    assert info is not None and info.progress == {"step": 1}
    await broker.settle_claim(NS, Q, "w", [Settlement("x", c.fence, Outcome.ok, "1")], 0)
    lost, _ = await broker.extend(NS, Q, [("x", c.fence, '{"step":2}')], 30)
    assert lost == ["x"]
    info = await broker.get(NS, Q, "x")
    assert info is not None and info.progress == {"step": 1}, "a late heartbeat wrote progress"


async def test_claim_reports_when_the_next_delayed_task_falls_due(broker: Broker) -> None:
    assert (await broker.settle_claim(NS, Q, "w", [], 5)).next_due_in_ms is None
    await enqueue(broker, TaskRequest("t", id="later", delay=60))
    due_in = (await broker.settle_claim(NS, Q, "w", [], 5)).next_due_in_ms
    assert due_in is not None and 59_000 < due_in <= 60_000
    await broker.pause(NS, Q)  # nothing falls due for a paused queue: no busy wake-ups
    assert (await broker.settle_claim(NS, Q, "w", [], 5)).next_due_in_ms is None
