"""Leader election on a coordination.k8s.io Lease, so two operator replicas run as one active
and one hot standby: only the holder runs kopf and the loops that write status.

The rules are client-go's (controller-runtime's managers use them): the holder renews every
`retry_period`; a standby takes the Lease over once it has seen the same record, unchanged, for
`lease_duration` of its own clock (so clocks need not agree); a holder that cannot renew for
`renew_deadline` stops, so it is never still writing when the standby starts. Writes carry the
Lease's resourceVersion: of two standbys racing, one gets a 409 and stays standby. A holder
that stops cleanly releases the Lease, and the standby takes over at its next try.

kopf's own peering was the alternative; it pauses kopf's handlers only, not the status writer,
tracker and scaler loops beside them, and needs a cluster-wide peering resource."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import Gauge

from taskorch.controller.kube import Kube
from taskorch.errors import TaskorchError
from taskorch.settings import Settings

log = logging.getLogger("taskorch.leader")
IS_LEADER = Gauge("taskorch_operator_leader", "1 while this replica holds the leader Lease.")


class LeaseLost(TaskorchError):
    """The Lease could not be renewed within the renew deadline: stop acting at once."""


@dataclass(frozen=True)
class Timing:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


SERVICEACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def elector_for(settings: Settings, kube: Kube) -> LeaderElector | None:
    """The elector the settings ask for, or None when leader election is off."""
    if not settings.leader_election:
        return None
    namespace = settings.leader_election_namespace or os.environ.get("POD_NAMESPACE")
    if not namespace and SERVICEACCOUNT_NAMESPACE.exists():
        namespace = SERVICEACCOUNT_NAMESPACE.read_text().strip()
    if not namespace:
        raise TaskorchError(
            "leader election needs the Lease's namespace: set TASKORCH_LEADER_ELECTION_NAMESPACE"
        )
    # client-go's identity: the pod (or host) name and a random suffix, unique per process.
    identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    lease = settings.leader_lease_seconds
    timing = Timing(lease, renew_deadline=lease * 2 / 3, retry_period=lease * 2 / 15)
    return LeaderElector(kube, namespace, settings.leader_election_lease, identity, timing)


@contextlib.asynccontextmanager
async def standby_liveness(url: str | None) -> AsyncIterator[None]:
    """Answer the liveness probe while waiting to lead (kopf serves it once leading)."""
    if not url:
        yield
        return
    where = urlsplit(url)

    async def alive(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    app = web.Application()
    app.router.add_get(where.path or "/", alive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, where.hostname, where.port).start()
    try:
        yield
    finally:
        await runner.cleanup()


def micro_time(at: float) -> str:
    """A Kubernetes MicroTime."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self, kube: Kube, namespace: str, name: str, identity: str, timing: Timing = Timing()
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing
        # What this replica last saw of the Lease, and when (its monotonic clock).
        self._seen: tuple[Any, ...] | None = None
        self._seen_at = 0.0
        self._resource_version: str | None = None
        self.leading = False

    async def acquire(self) -> None:
        """Return once this replica holds the Lease (at once when it is free)."""
        log.info(
            "waiting to lead through Lease %s/%s as %s", self.namespace, self.name, self.identity
        )
        while True:
            try:
                if await self._try():
                    break
            except Exception as e:  # the API server may be restarting: keep trying
                log.warning("trying for the Lease failed: %s", e)
            await asyncio.sleep(self.timing.retry_period)
        self.leading = True
        IS_LEADER.set(1)
        log.info("leading as %s", self.identity)

    async def hold(self) -> None:
        """Renew until cancelled; raise LeaseLost when renewing fails for the renew deadline
        or another replica holds the Lease."""
        last_renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.timing.retry_period)
            try:
                renewed = await self._try()
            except Exception as e:  # an API error is retried until the deadline
                log.warning("renewing the Lease failed: %s", e)
                renewed = False
            if renewed:
                last_renewed = time.monotonic()
            elif self._seen is not None and self._seen[0] not in (self.identity, ""):
                self._lost(f"Lease taken by {self._seen[0]}")
            elif time.monotonic() - last_renewed > self.timing.renew_deadline:
                self._lost(f"Lease not renewed for {self.timing.renew_deadline:.0f}s")

    async def release(self) -> None:
        """Give the Lease up (on a clean stop), so a standby takes over at its next try."""
        if not self.leading:
            return
        self.leading = False
        IS_LEADER.set(0)
        lease = await self._read()
        if lease is None or lease["spec"].get("holderIdentity") != self.identity:
            return
        now = time.time()
        lease["spec"].update(
            {"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": micro_time(now)}
        )
        await self.kube.write_lease(self.namespace, lease)
        log.info("released the Lease")

    def _lost(self, why: str) -> None:
        self.leading = False
        IS_LEADER.set(0)
        raise LeaseLost(why)

    async def _read(self) -> dict[str, Any] | None:
        return await self.kube.read_lease(self.namespace, self.name)

    async def _try(self) -> bool:
        """One acquire-or-renew step; True when this replica holds the Lease after it."""
        now = time.time()
        lease = await self._read()
        ours = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": math.ceil(self.timing.lease_duration),
            "renewTime": micro_time(now),
        }
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**ours, "acquireTime": micro_time(now), "leaseTransitions": 0},
            }
            return await self.kube.write_lease(self.namespace, body, create=True)
        spec = lease["spec"]
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"))
        if record != self._seen:
            self._seen, self._seen_at = record, time.monotonic()
        if holder == self.identity:
            spec.update(ours)
        else:
            expired = time.monotonic() - self._seen_at > float(record[2] or 0)
            if holder and not expired:
                return False
            spec.update(ours)
            spec["acquireTime"] = micro_time(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            log.info("taking the Lease over from %r", holder or "nobody")
        return await self.kube.write_lease(self.namespace, lease)
