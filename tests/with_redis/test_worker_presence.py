"""Workers' presence and the scaler's stop mark (queue/workers.py, worker/presence.py), against
a real redis-server: a marked worker stops claiming and acknowledges only once idle."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

import taskorch
from taskorch.queue.broker import Broker
from taskorch.queue.model import State, TaskRequest
from taskorch.queue.workers import WorkerPresence, clear_stop, mark_stop, read_workers
from taskorch.worker.runner import Worker
from tests.support import async_wait_for
from tests.with_redis.test_queue_policy import serving

NS, Q = "team-pr", "default"


@pytest.fixture
async def broker(aredis: aioredis.Redis) -> Broker:
    return Broker(aredis)


@pytest.fixture
async def gate() -> asyncio.Event:
    return asyncio.Event()


def app_with(gate: asyncio.Event) -> taskorch.App:
    app = taskorch.App()

    @app.handler("hold")
    async def hold(ctx: taskorch.Context) -> None:
        await gate.wait()

    @app.handler("quick")
    async def quick(ctx: taskorch.Context) -> None:
        return None

    return app


async def presence_of(broker: Broker, name: str) -> WorkerPresence | None:
    return next((w for w in await read_workers(broker.redis, NS) if w.name == name), None)


async def test_a_worker_heartbeats_its_pod_and_what_it_runs(
    broker: Broker, gate: asyncio.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POD_NAME", "images-7d9c-abcde")
    w = Worker(app_with(gate), broker, namespace=NS, queues=Q, concurrency=4, name="w1")
    await broker.enqueue_many(NS, Q, [TaskRequest("hold")])
    async with serving(w):

        async def busy() -> WorkerPresence | None:
            p = await presence_of(broker, "w1")
            return p if p and p.running == 1 else None

        p = await async_wait_for(busy, timeout=10, what="the presence to show a running task")
        assert p.pod == "images-7d9c-abcde" and p.queues == (Q,) and p.concurrency == 4
        gate.set()
    assert await presence_of(broker, "w1") is None  # gone at once on a clean exit


async def test_a_marked_worker_stops_claiming_and_acknowledges_only_when_idle(
    broker: Broker, gate: asyncio.Event
) -> None:
    w = Worker(app_with(gate), broker, namespace=NS, queues=Q, concurrency=4, name="w1")
    [held] = await broker.enqueue_many(NS, Q, [TaskRequest("hold")])
    async with serving(w):
        await async_wait_for(lambda: presence_of(broker, "w1"), timeout=10, what="presence")
        await mark_stop(broker.redis, NS, ["w1"], "m1")

        async def quiesced() -> WorkerPresence | None:
            p = await presence_of(broker, "w1")
            return p if p and p.quiesced else None

        p = await async_wait_for(quiesced, timeout=10, what="the worker to stop claiming")
        assert p.running == 1 and not p.drained  # busy: never acknowledged
        [waiting] = await broker.enqueue_many(NS, Q, [TaskRequest("quick")])
        gate.set()  # the running task ends

        async def drained() -> WorkerPresence | None:
            p = await presence_of(broker, "w1")
            return p if p and p.drained else None

        await async_wait_for(drained, timeout=10, what="the idle acknowledgement")
        # it claimed nothing new while marked
        got = await broker.get(NS, Q, waiting)
        assert got is not None and got.state is State.queued
        # a cleared mark: claims again
        await clear_stop(broker.redis, NS, ["w1"])

        async def ran() -> bool:
            info = await broker.get(NS, Q, waiting)
            return info is not None and info.state is State.succeeded

        await async_wait_for(ran, timeout=10, what="the worker to claim again")
    done = await broker.get(NS, Q, held)
    assert done is not None and done.state is State.succeeded
