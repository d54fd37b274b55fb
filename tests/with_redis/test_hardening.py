"""Regression tests of the queue scripts for the hardening issue's defects (numbers in the test
names), against a real redis-server."""

from __future__ import annotations

import json
import logging
import time
from unittest import mock

import pytest
import redis.asyncio as aioredis

import taskorch
from taskorch.queue import keys
from taskorch.queue.broker import Broker
from taskorch.queue.connection import warn_unless_noeviction
from taskorch.queue.inspect import Inspector
from taskorch.queue.model import Claimed, Outcome, Settlement, State, TaskRequest
from taskorch.queue.policy import DEFAULTS, QueuePolicy

NS, Q = "team-h", "default"


@pytest.fixture
async def broker(aredis: aioredis.Redis) -> Broker:
    broker = Broker(aredis)
    await broker.configure(NS, Q, QueuePolicy(max_recoveries=3, dlq_cap=100))
    return broker


async def claim_one(broker: Broker, worker: str = "w") -> Claimed:
    _, [c], _, _ = await broker.settle_claim(NS, Q, worker, [], 1)
    return c


async def state(broker: Broker, task_id: str) -> State | None:
    info = await broker.get(NS, Q, task_id)
    return info.state if info else None


async def expire_lease(broker: Broker, task_id: str) -> None:
    await broker.redis.zadd(keys.active(NS, Q), {task_id: 0}, xx=True)


async def test_1_history_that_cjson_cannot_decode_does_not_abort_the_batch(broker: Broker) -> None:
    await broker.enqueue_many(NS, Q, [TaskRequest("t", id="bad"), TaskRequest("t", id="good")])
    _, claimed, _, _ = await broker.settle_claim(NS, Q, "w", [], 2)
    fences = {c.id: c.fence for c in claimed}
    # What json.dumps writes for a lone surrogate; cjson.decode refuses it.
    poisoned = Settlement("bad", fences["bad"], Outcome.retry, '{"type":"E"}', 0, None)
    argv = poisoned.argv()
    argv[5] = '{"error":"x \\udcff"}'
    raw = await broker.redis.evalsha(
        broker.scripts.settle_claim.sha,
        1,
        keys.prefix(NS, Q),
        "w",
        30_000,
        0,
        *DEFAULTS.limits(),
        *argv,
        *Settlement("good", fences["good"], Outcome.ok, "1").argv(),
    )
    assert raw[0] == []  # nothing rejected, no script error
    assert await state(broker, "good") is State.succeeded
    assert await state(broker, "bad") is State.retrying


async def test_4_cancel_wins_over_failure_drain_lost_worker_and_hand_back(broker: Broker) -> None:
    ids = ["failed", "released", "lost", "handed"]
    await broker.enqueue_many(NS, Q, [TaskRequest("t", id=i) for i in ids])
    _, claimed, _, _ = await broker.settle_claim(NS, Q, "w", [], 4)
    fence = {c.id: c.fence for c in claimed}
    for i in ids:
        assert await broker.cancel(NS, Q, i) == "active"
    err = json.dumps({"type": "E", "reason": "HandlerError"})
    await broker.settle_claim(
        NS,
        Q,
        "w",
        [
            Settlement("failed", fence["failed"], Outcome.retry, err, 10),
            Settlement("released", fence["released"], Outcome.release),
            Settlement("handed", fence["handed"], Outcome.handback, err),
        ],
        0,
    )
    await expire_lease(broker, "lost")
    await broker.settle_claim(NS, Q, "w2", [], 0)  # reaps
    for i in ids:
        assert await state(broker, i) is State.cancelled, i
    _, claimed, _, _ = await broker.settle_claim(NS, Q, "w3", [], 10)
    assert claimed == [], "a cancelled task was handed out again"


async def test_5_cancelling_a_task_redis_does_not_have_creates_nothing(broker: Broker) -> None:
    assert await broker.cancel(NS, Q, "never-enqueued", generation=2) is None
    assert await broker.redis.exists(keys.task(NS, Q, "never-enqueued")) == 0
    # so an enqueue of that id afterwards is a real enqueue, not a no-op on a bare hash
    await broker.enqueue_many(NS, Q, [TaskRequest("t", id="never-enqueued")])
    assert (await claim_one(broker)).id == "never-enqueued"


async def test_8_leases_run_on_redis_clock_not_the_callers(broker: Broker) -> None:
    await broker.enqueue_many(NS, Q, [TaskRequest("t", id="x")])
    await claim_one(broker, "honest")
    # A worker whose clock runs a minute fast claims: the 30 s lease must still be live.
    with mock.patch("time.time", return_value=time.time() + 60):
        await broker.enqueue_many(NS, Q, [TaskRequest("t", id="y")])
        _, claimed, _, _ = await broker.settle_claim(NS, Q, "fast-clock", [], 5)
    assert [c.id for c in claimed] == ["y"], "a live lease was taken by a fast clock"
    info = await broker.get(NS, Q, "x")
    assert info is not None and info.state is State.active and info.owner == "honest"
    deadline = await broker.redis.zscore(keys.active(NS, Q), "x")
    server_s, _ = await broker.redis.time()
    assert deadline is not None and abs(deadline / 1000 - (server_s + 30)) < 5


async def test_9_sdk_priority_out_of_range_is_refused_and_nothing_enqueued(redis_url: str) -> None:
    async with taskorch.Client(redis_url, namespace=NS) as c:
        with pytest.raises(taskorch.InvalidTask, match="priority"):
            await c.enqueue("t", priority=10)
        with pytest.raises(taskorch.InvalidTask, match="queue"):
            await c.enqueue("t", queue="Not A Queue")
        with pytest.raises(taskorch.InvalidTask, match="over 65536"):
            await c.enqueue("t", {"blob": "x" * 70_000})
        assert await Inspector(c.broker).queues() == []
        broker = c.broker
        with pytest.raises(taskorch.InvalidTask, match="outside 0-9"):
            await broker.enqueue_many(NS, Q, [TaskRequest("t", priority=10)])


async def test_10_sdk_bad_retry_policy_is_refused_at_enqueue(redis_url: str) -> None:
    async with taskorch.Client(redis_url, namespace=NS) as c:
        with pytest.raises(taskorch.InvalidTask, match="initialDelay"):
            await c.enqueue("t", retry={"initialDelay": 2})
        with pytest.raises(taskorch.InvalidTask, match="must not exceed maxDelay"):
            await c.enqueue("t", retry={"initialDelay": "10m", "maxDelay": "1m"})
        with pytest.raises(taskorch.InvalidTask, match="maxAttempts"):
            await c.enqueue("t", retry={"maxAttempts": 0})
        task_id = await c.enqueue("t", retry={"maxAttempts": 2, "initialDelay": "1s"})
        info = await c.get(task_id)
        assert info is not None and info.state is State.queued


async def test_11_dead_tasks_keep_their_data_for_the_dlq_retention(aredis: aioredis.Redis) -> None:
    broker = Broker(aredis)
    await broker.configure(NS, Q, QueuePolicy(dlq_cap=100, dlq_retention_seconds=3600))
    await broker.enqueue_many(NS, Q, [TaskRequest("t", id=i) for i in ("old", "new")])
    _, claimed, _, _ = await broker.settle_claim(NS, Q, "w", [], 2)
    fences = {c.id: c.fence for c in claimed}
    await broker.settle_claim(NS, Q, "w", [Settlement("old", fences["old"], Outcome.dead, "{}")], 0)
    # A dead task does not expire with the result retention while it is in the DLQ.
    assert await aredis.ttl(keys.task(NS, Q, "old")) == -1
    # Past the DLQ's own retention it leaves the DLQ together with its data.
    await aredis.zadd(keys.dead(NS, Q), {"old": 1}, xx=True)
    await broker.settle_claim(NS, Q, "w", [Settlement("new", fences["new"], Outcome.dead, "{}")], 0)
    assert await Inspector(broker).dead_ids(NS, Q) == ["new"]
    assert await aredis.exists(keys.task(NS, Q, "old")) == 0


async def test_12_a_failed_registry_write_is_retried_by_the_next_enqueue(
    broker: Broker, aredis: aioredis.Redis
) -> None:
    await aredis.set(keys.QUEUES, "not a set")  # SADD on it fails with WRONGTYPE
    # The task is enqueued all the same (raising would make the caller enqueue it twice)...
    assert await broker.enqueue_many(NS, Q, [TaskRequest("t", id="a")]) == ["a"]
    assert await aredis.exists(keys.registered(NS, Q)) == 0
    await aredis.delete(keys.QUEUES)
    # ...and the next enqueue registers the queue.
    await broker.enqueue_many(NS, Q, [TaskRequest("t", id="b")])
    assert await Inspector(broker).queues() == [(NS, Q)]


async def test_13_hand_back_is_not_an_attempt_and_is_bounded(aredis: aioredis.Redis) -> None:
    broker = Broker(aredis)
    await broker.configure(NS, Q, QueuePolicy(handback_limit=2, handback_delay_seconds=0))
    await broker.enqueue_many(NS, Q, [TaskRequest("t", id="x", notify=True)])
    err = json.dumps({"type": "UnknownTaskType", "reason": "UnknownTaskType", "message": "m"})
    for _ in range(2):
        c = await claim_one(broker)
        hist = {"attempt": c.attempt, "worker": "w", "outcome": "Refused"}
        await broker.settle_claim(
            NS, Q, "w", [Settlement("x", c.fence, Outcome.handback, err, 0, hist)], 0
        )
        info = await broker.get(NS, Q, "x")
        assert info is not None and info.state is State.queued and info.attempt == 0
    c = await claim_one(broker)
    await broker.settle_claim(NS, Q, "w", [Settlement("x", c.fence, Outcome.handback, err)], 0)
    info = await broker.get(NS, Q, "x")
    assert info is not None and info.state is State.dead and info.attempt == 0
    assert info.error is not None and info.error["reason"] == "UnknownTaskType"


async def test_minor_expired_leases_are_recovered_while_paused_and_by_heartbeats(
    broker: Broker,
) -> None:
    await broker.enqueue_many(NS, Q, [TaskRequest("t", id="lost"), TaskRequest("t", id="busy")])
    _, claimed, _, _ = await broker.settle_claim(NS, Q, "w", [], 2)
    busy = next(c for c in claimed if c.id == "busy")
    await broker.pause(NS, Q)
    await expire_lease(broker, "lost")
    # The only call made while every worker is busy and the queue paused: a heartbeat.
    await broker.extend(NS, Q, [("busy", busy.fence, "")], 30)
    info = await broker.get(NS, Q, "lost")
    assert info is not None and info.state is State.queued
    assert [h["outcome"] for h in info.history] == ["LostWorker"]


async def test_minor_warns_when_redis_may_evict(
    aredis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await aredis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with caplog.at_level(logging.WARNING, logger="taskorch.redis"):
            await warn_unless_noeviction(aredis)
        assert "allkeys-lru" in caplog.text and "noeviction" in caplog.text
    finally:
        await aredis.config_set("maxmemory-policy", "noeviction")
    caplog.clear()
    await warn_unless_noeviction(aredis)
    assert caplog.text == ""


async def test_history_times_come_from_redis(broker: Broker) -> None:
    await broker.enqueue_many(NS, Q, [TaskRequest("t", id="x")])
    c = await claim_one(broker)
    hist = {"attempt": 1, "worker": "w", "outcome": "Succeeded"}
    with mock.patch("time.time", return_value=0):
        await broker.settle_claim(
            NS, Q, "w", [Settlement("x", c.fence, Outcome.ok, "1", 0, hist)], 0
        )
    info = await broker.get(NS, Q, "x")
    assert info is not None
    [h] = info.history
    assert h["startTime"] == info.started_ms and h["finishTime"] == info.finished_ms
    assert h["finishTime"] > 1_700_000_000_000


async def test_a_retry_past_the_deadline_is_dead_lettered_as_deadline_exceeded(
    broker: Broker,
) -> None:
    await broker.enqueue_many(NS, Q, [TaskRequest("t", id="x", deadline=time.time() + 30)])
    c = await claim_one(broker)
    err = json.dumps({"type": "RuntimeError", "reason": "HandlerError", "message": "boom"})
    await broker.settle_claim(NS, Q, "w", [Settlement("x", c.fence, Outcome.retry, err, 60_000)], 0)
    info = await broker.get(NS, Q, "x")
    assert info is not None and info.state is State.dead and info.error is not None
    assert info.error["reason"] == "DeadlineExceeded" and info.error["type"] == "RuntimeError"
    assert info.error["message"].endswith("past the task deadline: boom")


async def test_11_the_dlq_retention_is_kept_by_claims_too(aredis: aioredis.Redis) -> None:
    broker = Broker(aredis)
    await broker.configure(NS, Q, QueuePolicy(dlq_retention_seconds=3600))
    await broker.enqueue_many(NS, Q, [TaskRequest("t", id="old")])
    c = await claim_one(broker)
    await broker.settle_claim(NS, Q, "w", [Settlement("old", c.fence, Outcome.dead, "{}")], 0)
    await aredis.zadd(keys.dead(NS, Q), {"old": 1}, xx=True)  # dead-lettered long ago
    await broker.settle_claim(NS, Q, "w", [], 1)  # no new dead task: a plain claim
    assert await Inspector(broker).dead_ids(NS, Q) == []
    assert await aredis.exists(keys.task(NS, Q, "old")) == 0


async def test_a_task_lost_by_redis_whose_key_survived_is_enqueued_again(broker: Broker) -> None:
    await broker.enqueue_many(NS, Q, [TaskRequest("t", id="x", idempotency_key="k")])
    await broker.redis.delete(keys.task(NS, Q, "x"))  # the task's data lost, its key kept
    assert await broker.enqueue_many(NS, Q, [TaskRequest("t", id="x", idempotency_key="k")]) == [
        "x"
    ]
    assert await state(broker, "x") is State.queued


async def test_a_mass_cancel_is_dropped_over_several_bounded_claims(broker: Broker) -> None:
    ids = [f"c{i}" for i in range(1500)]
    await broker.enqueue_many(NS, Q, [TaskRequest("t", id=i) for i in ids])
    await broker.enqueue_many(NS, Q, [TaskRequest("t", id="real")])
    for i in ids:
        await broker.cancel(NS, Q, i)
    first = await broker.settle_claim(NS, Q, "w", [], 1)
    assert first.claimed == []  # 1000 cancelled ids dropped, then the call returns
    second = await broker.settle_claim(NS, Q, "w", [], 1)
    assert [c.id for c in second.claimed] == ["real"]


async def test_11_sdk_idempotency_keys_are_checked(redis_url: str) -> None:
    async with taskorch.Client(redis_url, namespace=NS) as c:
        with pytest.raises(taskorch.InvalidTask, match="2 idempotency keys for 3 payloads"):
            await c.enqueue_many("t", [1, 2, 3], idempotency_keys=["a", "b"])
        with pytest.raises(taskorch.InvalidTask, match="over 256"):
            await c.enqueue_many("t", [1], idempotency_keys=["k" * 300])
