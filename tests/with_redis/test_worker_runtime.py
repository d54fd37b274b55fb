"""The worker runtime in-process against a real redis-server: the hardening issue's worker
defects (numbers in the test names)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from pydantic import BaseModel

import taskorch
from taskorch.queue import keys
from taskorch.queue.broker import Broker
from taskorch.queue.connection import RedisClient
from taskorch.queue.inspect import Inspector
from taskorch.queue.model import ClaimResult, Outcome, State, TaskInfo, TaskRequest
from taskorch.queue.policy import QueuePolicy
from taskorch.supervise import LoopEnded
from taskorch.worker.runner import Worker
from tests.support import async_wait_for

NS = "team-w"


@asynccontextmanager
async def serving(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        if not task.done():
            worker.drain()
            worker._stop_all("release")
            with suppress(LoopEnded):
                await asyncio.wait_for(task, 10)


async def enqueue(broker: Broker, queue: str, *reqs: TaskRequest) -> list[str]:
    return await broker.enqueue_many(NS, queue, list(reqs))


async def info(broker: Broker, task_id: str, queue: str = "default") -> TaskInfo:
    got = await broker.get(NS, queue, task_id)
    assert got is not None
    return got


async def ended(broker: Broker, task_id: str, queue: str = "default") -> TaskInfo | None:
    got = await broker.get(NS, queue, task_id)
    return got if got and got.state in (State.succeeded, State.dead, State.cancelled) else None


@pytest.fixture
async def aredis(any_redis: RedisClient) -> RedisClient:
    """Every test here runs on one redis-server and on a Redis Cluster."""
    return any_redis


@pytest.fixture
async def broker(aredis: aioredis.Redis) -> Broker:
    broker = Broker(aredis)
    # hand-backs come back fast here (default: 1 s, doubling)
    await broker.configure(
        NS, "default", QueuePolicy(handback_limit=3, handback_delay_seconds=0.05)
    )
    return broker


async def test_1_a_lone_surrogate_in_an_error_does_not_kill_the_worker(broker: Broker) -> None:
    app = taskorch.App()

    @app.handler("bad_name", retry=taskorch.Retry(max_attempts=1))
    async def bad_name(ctx: taskorch.Context) -> None:
        raise FileNotFoundError(os.fsdecode(b"/data/caf\xe9.jpg"))  # "\udce9" in the text

    @app.handler("fine")
    async def fine(ctx: taskorch.Context) -> str:
        return "ok"

    w = Worker(app, broker, namespace=NS, queues="default", concurrency=4)
    ids = await enqueue(broker, "default", TaskRequest("bad_name"), TaskRequest("fine"))
    async with serving(w) as running:
        for task_id in ids:
            await async_wait_for(lambda i=task_id: ended(broker, i), what=f"{task_id} to end")
        bad, good = [await info(broker, i) for i in ids]
        assert bad.state is State.dead and good.state is State.succeeded
        assert bad.error is not None and "caf\ufffd.jpg" in bad.error["message"]
        late = await enqueue(broker, "default", TaskRequest("fine"))
        await async_wait_for(lambda: ended(broker, late[0]), what="the worker to go on working")
        assert not running.done()


class RefusingBroker(Broker):
    """A real broker, except that the queue refuses any batch holding a settlement of `poison`
    (as a script error for one task would) but its dead-lettering."""

    poison = ""

    async def settle_claim(
        self,
        namespace: str,
        queue: str,
        worker: str,
        settlements: Any,
        n: int,
        lease_seconds: float | None = None,
    ) -> ClaimResult:
        settlements = list(settlements)
        if any(s.id == self.poison and s.outcome is not Outcome.dead for s in settlements):
            raise redis.exceptions.ResponseError("user_script:42: Script attempted something")
        return await super().settle_claim(namespace, queue, worker, settlements, n, lease_seconds)


async def test_1_a_script_error_for_one_task_settles_the_rest_and_dead_letters_it(
    aredis: aioredis.Redis,
) -> None:
    broker = RefusingBroker(aredis)
    app = taskorch.App()
    release = asyncio.Event()

    @app.handler("wait")
    async def wait(ctx: taskorch.Context) -> str:
        await release.wait()  # both finish together: one settlement batch
        return ctx.task_id

    ids = await enqueue(broker, "default", TaskRequest("wait"), TaskRequest("wait"))
    broker.poison = ids[0]
    w = Worker(app, broker, namespace=NS, queues="default", concurrency=4)
    async with serving(w) as running:
        await async_wait_for(lambda: _all_active(broker, ids), what="both running")
        release.set()
        for task_id in ids:
            await async_wait_for(lambda i=task_id: ended(broker, i), what=f"{task_id} to end")
        poisoned, other = [await info(broker, i) for i in ids]
        assert other.state is State.succeeded and other.result == ids[1]
        assert poisoned.state is State.dead
        assert poisoned.error is not None and poisoned.error["reason"] == "SettlementRefused"
        assert not running.done()


async def _all_active(broker: Broker, ids: Sequence[str]) -> bool:
    states = [(await info(broker, i)).state for i in ids]
    return all(s is State.active for s in states)


class ReadOnlyBroker(Broker):
    """A real broker whose heartbeats are refused, as by a replica after a failover."""

    async def extend(self, *args: Any, **kwargs: Any) -> tuple[list[str], list[str]]:
        raise redis.exceptions.ReadOnlyError(
            "READONLY You can't write against a read only replica."
        )


class SilentBroker(Broker):
    """A real broker whose heartbeats never answer, as over a silent partition."""

    async def extend(self, *args: Any, **kwargs: Any) -> tuple[list[str], list[str]]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.mark.parametrize("broken", [ReadOnlyBroker, SilentBroker])
async def test_2_a_worker_that_cannot_renew_its_leases_stops(
    aredis: aioredis.Redis, broken: type[Broker]
) -> None:
    broker = broken(aredis)
    app = taskorch.App()
    ran = asyncio.Event()

    @app.handler("long")
    async def long(ctx: taskorch.Context) -> None:
        ran.set()
        await asyncio.sleep(60)

    await enqueue(broker, "default", TaskRequest("long"))
    w = Worker(app, broker, namespace=NS, queues="default", lease_seconds=0.6)
    started = time.monotonic()
    with pytest.raises(LoopEnded, match=r"heartbeat.*could not renew leases"):
        await asyncio.wait_for(w.run(), 20)
    assert ran.is_set()
    # two thirds of the 0.6 s lease, so before the lease expires: nobody else runs it yet
    assert time.monotonic() - started < 5


class Job(BaseModel):
    seconds: float


async def test_3_a_hung_sync_handler_does_not_fail_tasks_that_never_ran(broker: Broker) -> None:
    app = taskorch.App()
    runs: list[str] = []

    @app.handler("hang", timeout=0.3, retry=taskorch.Retry(max_attempts=1))
    def hang(ctx: taskorch.Context, job: Job) -> None:
        time.sleep(job.seconds)  # a sync handler ignoring its timeout: the thread stays busy

    @app.handler("quick", timeout=0.5, retry=taskorch.Retry(max_attempts=1))
    def quick(ctx: taskorch.Context) -> str:
        runs.append(ctx.task_id)
        return "ran"

    hung = await enqueue(broker, "default", *(TaskRequest("hang", {"seconds": 2}) for _ in "ab"))
    w = Worker(app, broker, namespace=NS, queues="default", concurrency=2)
    async with serving(w):
        for task_id in hung:
            await async_wait_for(lambda i=task_id: ended(broker, i), what="the hung ones to fail")
        assert w.threads.hung == 2 and w.free_capacity() == 0
        quick_ids = await enqueue(broker, "default", TaskRequest("quick"), TaskRequest("quick"))
        for task_id in quick_ids:
            done = await async_wait_for(
                lambda i=task_id: ended(broker, i), timeout=20, what="quick"
            )
            assert done.state is State.succeeded and done.attempt == 1, done.error
        assert sorted(runs) == sorted(quick_ids)
        assert [(await info(broker, i)).error["reason"] for i in hung] == [  # type: ignore[index]
            "MaxAttemptsExceeded"
        ] * 2


async def test_10_a_bad_stored_retry_policy_dead_letters_at_once(broker: Broker) -> None:
    app = taskorch.App()

    @app.handler("fails")
    async def fails(ctx: taskorch.Context) -> None:
        raise RuntimeError("boom")

    # Enqueued past the SDK's checks (an old client, a hand-written record).
    [task_id] = await enqueue(broker, "default", TaskRequest("fails", retry={"initialDelay": 2}))
    w = Worker(app, broker, namespace=NS, queues="default")
    async with serving(w):
        done = await async_wait_for(lambda: ended(broker, task_id), timeout=10, what="dead")
    assert done.state is State.dead
    assert done.error is not None and done.error["reason"] == "InvalidRetryPolicy"


async def test_13_a_worker_without_the_handler_hands_the_task_to_one_that_has_it(
    broker: Broker,
) -> None:
    old_app, new_app = taskorch.App(), taskorch.App()

    @new_app.handler("new_type")
    async def new_type(ctx: taskorch.Context) -> str:
        return "handled"

    [task_id] = await enqueue(broker, "default", TaskRequest("new_type"))
    # A rolling upgrade: the old version refuses the task, then leaves; the new one runs it.
    old = Worker(old_app, broker, namespace=NS, queues="default", name="old-version")
    async with serving(old):
        await async_wait_for(
            lambda: _handed_back(broker, task_id), what="the old worker to hand it back"
        )
        assert "new_type" in old.refused_types
    new = Worker(new_app, broker, namespace=NS, queues="default", name="new-version")
    async with serving(new):
        done = await async_wait_for(lambda: ended(broker, task_id), what="it to run")
    assert done.state is State.succeeded and done.result == "handled"
    assert done.attempt == 1  # hand-backs are not attempts
    assert done.history[0]["outcome"] == "Refused" and done.history[-1]["worker"] == "new-version"


async def _handed_back(broker: Broker, task_id: str) -> bool:
    return any(h["outcome"] == "Refused" for h in (await info(broker, task_id)).history)


class Secret(BaseModel):
    token: str
    count: int


async def test_14_secret_values_never_leave_the_worker_in_errors(broker: Broker) -> None:
    app = taskorch.App()

    @app.handler("login", retry=taskorch.Retry(max_attempts=1))
    async def login(ctx: taskorch.Context, p: Secret) -> None:
        raise PermissionError(f"token {p.token} was refused")

    secret = "s3cr3t-Value-42"
    bad_payload, leaky = await enqueue(
        broker,
        "default",
        TaskRequest("login", {"token": secret, "count": "many"}, redact=("token",)),
        TaskRequest("login", {"token": secret, "count": 1}, redact=("token",)),
    )
    w = Worker(app, broker, namespace=NS, queues="default")
    async with serving(w):
        for task_id in (bad_payload, leaky):
            await async_wait_for(lambda i=task_id: ended(broker, i), what="dead")
    for task_id, reason in ((bad_payload, "InvalidPayload"), (leaky, "MaxAttemptsExceeded")):
        raw = await broker.redis.hgetall(keys.task(NS, "default", task_id))
        stored = {k: v for k, v in raw.items() if k != b"payload"}
        assert secret.encode() not in repr(stored).encode(), stored
        done = await info(broker, task_id)
        assert done.error is not None and done.error["reason"] == reason
    assert (
        "count: Input should be a valid integer"
        in (await info(broker, bad_payload)).error["message"]
    )  # type: ignore[index]
    assert "[redacted]" in (await info(broker, leaky)).error["message"]  # type: ignore[index]


@pytest.mark.parametrize("spec", ["busy:3,light:1", "busy,light"])
async def test_16_weighted_queues_serve_a_later_queue_under_a_full_first_one(
    broker: Broker, spec: str
) -> None:
    app = taskorch.App()

    @app.handler("work")
    async def work(ctx: taskorch.Context) -> None:
        await asyncio.sleep(0.02)

    await enqueue(broker, "busy", *(TaskRequest("work") for _ in range(400)))
    light = await enqueue(broker, "light", *(TaskRequest("work") for _ in range(10)))
    w = Worker(app, broker, namespace=NS, queues=spec, concurrency=4)
    inspector = Inspector(broker)
    async with serving(w):
        if spec.endswith(":1"):
            # weights 3:1: a quarter of the capacity goes to the light queue while busy is
            # full, so all of light ends long before busy runs dry
            async def light_all_ended() -> bool:
                return all([await ended(broker, i, "light") for i in light])

            await async_wait_for(light_all_ended, what="the light queue to be served")
            assert (await inspector.stats(NS, "busy")).ready > 0
        else:
            # strict order: nothing of the light queue runs while the busy one has work
            async def progressed() -> bool:
                return (await inspector.stats(NS, "busy")).ready < 300

            await async_wait_for(progressed, what="the busy queue to be served")
            assert (await inspector.stats(NS, "busy")).ready > 0
            assert not any([await ended(broker, i, "light") for i in light])


class CountingBroker(Broker):
    calls = 0

    async def settle_claim(self, *args: Any, **kwargs: Any) -> ClaimResult:
        self.calls += 1
        return await super().settle_claim(*args, **kwargs)


async def test_an_idle_worker_sleeps_instead_of_polling(aredis: aioredis.Redis) -> None:
    broker = CountingBroker(aredis)
    app = taskorch.App()

    @app.handler("noop")
    async def noop(ctx: taskorch.Context) -> None:
        return None

    w = Worker(app, broker, namespace=NS, queues="default")
    async with serving(w):
        [task_id] = await enqueue(broker, "default", TaskRequest("noop"))
        await async_wait_for(lambda: ended(broker, task_id), what="the task to run")
        before = broker.calls
        idle = asyncio.Event()
        with suppress(TimeoutError):
            await asyncio.wait_for(idle.wait(), 2.0)  # two idle seconds to observe
        # woken by its marker or once a second (IDLE_WAKE_SECONDS): not a busy loop
        assert broker.calls - before <= 4, broker.calls - before


async def test_minor_progress_reports_are_capped(broker: Broker) -> None:
    app = taskorch.App()

    @app.handler("chatty", retry=taskorch.Retry(max_attempts=1))
    async def chatty(ctx: taskorch.Context) -> None:
        ctx.progress({"log": "x" * 20_000})

    [task_id] = await enqueue(broker, "default", TaskRequest("chatty"))
    async with serving(Worker(app, broker, namespace=NS, queues="default")):
        done = await async_wait_for(lambda: ended(broker, task_id), what="it to fail")
    assert done.error is not None and "over 16384" in done.error["message"]
    assert done.progress is None
