"""The status writer against a real Redis stream, with a fake Kubernetes API: failed writes are
retried until they land, and a restarted operator adopts what its predecessor read but never
acked. Nothing is acked before its status write landed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis

from taskorch.controller.consumer import GROUP_NAME, StatusWriter
from taskorch.queue import keys
from taskorch.queue.broker import Broker
from taskorch.queue.connection import RedisClient
from taskorch.queue.model import Outcome, Settlement, TaskRequest
from tests.support import async_wait_for

NS, Q = "team-a", "default"
STREAM = keys.events(NS, Q)


@dataclass
class FakeKube:
    """Records status patches; the first `failures` calls fail as an unreachable API would."""

    failures: int = 0
    poison: str = ""  # a Task whose every write fails (an admission webhook refusing it, say)
    calls: int = 0
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)

    async def patch_status(
        self, plural: str, namespace: str, name: str, uid: str, status: dict[str, Any]
    ) -> bool:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionRefusedError("the API server is down")
        if name == self.poison:
            raise ConnectionRefusedError(f"{name} is refused, always")
        self.statuses[name] = status
        return True

    async def status_of(self, name: str) -> dict[str, Any] | None:
        return self.statuses.get(name)

    async def event(self, kind: str, namespace: str, name: str, *args: str) -> None:
        self.events.append(args[2])  # the reason


@pytest.fixture
async def aredis(any_redis: RedisClient) -> RedisClient:
    """Every test here runs on one redis-server and on a Redis Cluster."""
    return any_redis


@pytest.fixture
async def broker(aredis: aioredis.Redis) -> Broker:
    return Broker(aredis)


async def run_to_success(broker: Broker, task_id: str) -> None:
    await broker.enqueue_many(
        NS, Q, [TaskRequest("t", id=task_id, notify=True, cr_name=f"cr-{task_id}", generation=1)]
    )
    _, [claimed], _, _ = await broker.settle_claim(NS, Q, "w", [], 1)
    await broker.settle_claim(NS, Q, "w", [Settlement(task_id, claimed.fence, Outcome.ok, "7")], 0)


@pytest.fixture
async def writers(broker: Broker) -> AsyncIterator[list[asyncio.Task[None]]]:
    started: list[asyncio.Task[None]] = []
    yield started
    for t in started:
        t.cancel()
    await asyncio.gather(*started, return_exceptions=True)


def start(broker: Broker, kube: FakeKube, name: str, started: list[asyncio.Task[None]]) -> None:
    writer = StatusWriter(broker, kube, consumer=name, batch_window=0.01)
    started.append(asyncio.create_task(writer.run()))


async def pending(broker: Broker) -> int:
    return int((await broker.redis.xpending(STREAM, GROUP_NAME))["pending"])


async def test_failed_writes_are_retried_until_they_land(
    broker: Broker, writers: list[asyncio.Task[None]]
) -> None:
    await run_to_success(broker, "a")
    kube = FakeKube(failures=3)
    start(broker, kube, "op-1", writers)
    status = await async_wait_for(lambda: kube.status_of("cr-a"), timeout=20, what="status of cr-a")
    assert status["phase"] == "Succeeded" and status["result"] == 7
    assert kube.calls == 4
    await async_wait_for(lambda: _none_pending(broker), timeout=10, what="every entry acked")


async def test_restarted_operator_adopts_what_its_predecessor_never_acked(
    broker: Broker, writers: list[asyncio.Task[None]]
) -> None:
    await run_to_success(broker, "b")
    # A previous operator process read every entry, then died before its writes and acks.
    await broker.redis.xgroup_create(STREAM, GROUP_NAME, id="0", mkstream=True)
    read = await broker.redis.xreadgroup(GROUP_NAME, "op-dead", {STREAM: ">"})
    assert [s for _, s in read[0][1]][-1][b"state"] == b"succeeded"
    assert await pending(broker) == 3

    kube = FakeKube()
    start(broker, kube, "op-2", writers)
    status = await async_wait_for(lambda: kube.status_of("cr-b"), timeout=20, what="status of cr-b")
    assert status["phase"] == "Succeeded"
    await async_wait_for(lambda: _none_pending(broker), timeout=10, what="every entry acked")
    consumers = {c["name"] for c in await broker.redis.xinfo_consumers(STREAM, GROUP_NAME)}
    assert consumers == {b"op-2"}


async def _none_pending(broker: Broker) -> bool:
    return await pending(broker) == 0


async def test_a_status_that_never_lands_neither_blocks_others_nor_stays_for_ever(
    broker: Broker, writers: list[asyncio.Task[None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("taskorch.controller.consumer.MAX_WRITE_ATTEMPTS", 3)
    kube = FakeKube(poison="cr-bad")
    await run_to_success(broker, "bad")
    start(broker, kube, "op-1", writers)
    await async_wait_for(lambda: _one_write_failed(kube), what="the poisoned write to fail")
    await run_to_success(broker, "good")  # arrives while the poisoned one is being retried
    status = await async_wait_for(lambda: kube.status_of("cr-good"), timeout=20, what="cr-good")
    assert status["phase"] == "Succeeded"
    await async_wait_for(lambda: _none_pending(broker), timeout=20, what="the poison given up")
    assert "cr-bad" not in kube.statuses


async def _one_write_failed(kube: FakeKube) -> bool:
    return kube.calls >= 1
