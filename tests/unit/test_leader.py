"""Leader election rules against an in-memory Lease that, like the API server, refuses a write
carrying a stale resourceVersion (409). The e2e (tests/e2e/test_standby.py) runs it for real."""

from __future__ import annotations

import asyncio
import copy
from typing import Any, cast

import pytest

from taskorch.controller.kube import Kube
from taskorch.controller.leader import LeaderElector, LeaseLost, Timing
from tests.support import async_wait_for

TIMING = Timing(lease_duration=1.0, renew_deadline=0.6, retry_period=0.1)


class FakeLeases:
    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.failing = False  # the API server unreachable

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.failing:
            raise ConnectionError("API server unreachable")
        lease = copy.deepcopy(self.lease)
        await asyncio.sleep(0)  # let racing replicas read the same version
        return lease

    async def write_lease(self, namespace: str, body: dict[str, Any], create: bool = False) -> bool:
        if self.failing:
            raise ConnectionError("API server unreachable")
        if create and self.lease is not None:
            return False
        if not create:
            assert self.lease is not None
            if body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
                return False
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return True

    @property
    def holder(self) -> str | None:
        return None if self.lease is None else self.lease["spec"]["holderIdentity"]


def elector(leases: FakeLeases, identity: str) -> LeaderElector:
    return LeaderElector(cast(Kube, leases), "ns", "taskorch-operator", identity, TIMING)


async def test_the_first_replica_leads_and_a_standby_waits_while_it_renews() -> None:
    leases = FakeLeases()
    a, b = elector(leases, "a"), elector(leases, "b")
    await a.acquire()
    assert leases.holder == "a" and a.leading
    holding = asyncio.create_task(a.hold())
    waiting = asyncio.create_task(b.acquire())
    renewed_at = leases.version
    # Several lease durations pass; a keeps renewing, so b never takes over.

    async def renewed_many_times() -> bool:
        return leases.version > renewed_at + 20

    await async_wait_for(renewed_many_times, timeout=10, what="renewals")
    assert not waiting.done() and leases.holder == "a" and not b.leading
    holding.cancel()  # a dies without releasing: b takes over once the record goes stale
    await asyncio.wait_for(waiting, timeout=5)
    assert leases.holder == "b" and leases.lease is not None
    assert leases.lease["spec"]["leaseTransitions"] == 1


async def test_a_released_lease_is_taken_at_the_next_try() -> None:
    leases = FakeLeases()
    a, b = elector(leases, "a"), elector(leases, "b")
    await a.acquire()
    waiting = asyncio.create_task(b.acquire())
    await asyncio.sleep(0)  # b has seen a's record
    await a.release()
    assert leases.holder == "" and not a.leading
    await asyncio.wait_for(waiting, timeout=TIMING.lease_duration / 2)
    assert leases.holder == "b"


async def test_a_leader_that_sees_another_holder_stops() -> None:
    leases = FakeLeases()
    a = elector(leases, "a")
    await a.acquire()
    assert leases.lease is not None
    leases.lease["spec"]["holderIdentity"] = "usurper"  # e.g. a after a long GC pause
    with pytest.raises(LeaseLost, match="usurper"):
        await asyncio.wait_for(a.hold(), timeout=5)
    assert not a.leading


async def test_a_leader_that_cannot_renew_stops_before_a_standby_may_take_over() -> None:
    leases = FakeLeases()
    a = elector(leases, "a")
    await a.acquire()
    leases.failing = True
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(LeaseLost, match="not renewed"):
        await asyncio.wait_for(a.hold(), timeout=5)
    # It gave up within the renew deadline (plus one try), before the lease duration ends.
    assert loop.time() - started < TIMING.lease_duration


async def test_of_two_standbys_racing_for_an_expired_lease_one_wins() -> None:
    leases = FakeLeases()
    dead = elector(leases, "dead")
    await dead.acquire()
    b, c = elector(leases, "b"), elector(leases, "c")
    done, pending = await asyncio.wait(
        [asyncio.create_task(b.acquire()), asyncio.create_task(c.acquire())],
        return_when=asyncio.FIRST_COMPLETED,
        timeout=5,
    )
    assert len(done) == 1 and len(pending) == 1
    winner = b if b.leading else c
    assert not (b.leading and c.leading) and leases.holder == winner.identity
    for task in pending:
        task.cancel()
