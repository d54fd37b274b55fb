"""TaskQueue glue: each TaskQueue's policy goes into its queue's Redis `config` hash (on every
watch event, and again on each refresh if Redis lost or changed it), and the queue's depth, age
and throughput come back into its status on an interval, written only when they changed.

No finalizer (as with Tasks): a deleted TaskQueue's queue falls back to the defaults when the
operator sees the deletion. The config names the TaskQueue it came from (`owner`), so a deletion
missed while the operator was down is caught too: once the operator has had time to list every
TaskQueue, a refresh drops each config whose owner it has not seen."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import kopf
import redis.exceptions
from pydantic import ValidationError

from taskorch.api.base import GROUP, VERSION, format_duration
from taskorch.api.reasons import Reason
from taskorch.api.taskqueue import TaskQueueSpec, TaskQueueStatus
from taskorch.controller.kube import KubeAPI
from taskorch.controller.status import held_condition
from taskorch.queue.broker import Broker
from taskorch.queue.inspect import Inspector, QueueStats
from taskorch.queue.model import now_ms
from taskorch.queue.policy import QueuePolicy

log = logging.getLogger("taskorch.taskqueues")
RESOURCE = (GROUP, VERSION, "taskqueues")
PLURAL = "taskqueues"
REDIS_ERRORS = (redis.exceptions.RedisError, OSError)
QueueRef = tuple[str, str]  # (namespace, queue)


@dataclass
class Declared:
    """A TaskQueue as last seen: its policy, or why it has none."""

    uid: str
    generation: int | None
    policy: QueuePolicy | None
    invalid: str | None
    status: dict[str, Any]  # as last written (or found on the object)


def declared_from(body: dict[str, Any]) -> Declared:
    meta = body["metadata"]
    try:
        policy, invalid = TaskQueueSpec.model_validate(body.get("spec") or {}).policy(), None
    except (ValidationError, ValueError) as e:
        policy, invalid = None, str(e)
    return Declared(
        meta["uid"], meta.get("generation"), policy, invalid, dict(body.get("status") or {})
    )


def queue_status(
    d: Declared,
    stats: QueueStats | None,
    throughput: float | None,
    unavailable: str | None,
    at_ms: int,
) -> dict[str, Any]:
    """The status to write: the Ready condition (its transition time kept while it holds) and,
    when Redis answered, the queue's numbers."""
    if d.invalid:
        ready = ("False", Reason.InvalidSpec, d.invalid)
    elif unavailable:
        ready = ("False", Reason.RedisUnreachable, unavailable)
    else:
        ready = ("True", Reason.Configured, "the queue's policy is in Redis")
    status = TaskQueueStatus(
        conditions=[
            held_condition(d.status.get("conditions"), "Ready", *ready, d.generation, at_ms)
        ],
        observed_generation=d.generation,
    )
    out = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    if stats is None:  # keep the last numbers Redis gave
        kept = ("ready", "active", "delayed", "dead", "oldestReadyAge", "throughput", "paused")
        return {**{k: d.status[k] for k in kept if k in d.status}, **out}
    numbers = TaskQueueStatus(
        ready=stats.ready,
        active=stats.active,
        delayed=stats.delayed,
        dead=stats.dead,
        oldest_ready_age=(
            format_duration(stats.oldest_ready_age_s) if stats.oldest_ready_age_s else "-"
        ),
        throughput=f"{throughput:.1f}/s" if throughput is not None else None,
        paused=stats.paused,
    )
    return {**numbers.model_dump(by_alias=True, mode="json", exclude_none=True), **out}


class TaskQueueRunner:
    def __init__(self, broker: Broker, kube: KubeAPI, interval: float) -> None:
        self.broker = broker
        self.kube = kube
        self.interval = interval
        self.inspector = Inspector(broker)
        self.declared: dict[QueueRef, Declared] = {}
        self.samples: dict[QueueRef, tuple[float, int]] = {}  # (monotonic time, finished)
        self.rates: dict[QueueRef, float] = {}  # the last throughput computed
        self.locks: dict[QueueRef, asyncio.Lock] = {}
        self.forgotten: set[QueueRef] = set()  # deleted: config still to be dropped

    async def on_event(self, type_: str | None, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        ref = (meta["namespace"], meta["name"])
        if type_ == "DELETED":
            if (d := self.declared.get(ref)) and d.uid == meta["uid"]:
                del self.declared[ref]
                self.forgotten.add(ref)
                await self._forget(ref)
            return
        self.forgotten.discard(ref)
        known = self.declared.get(ref)
        if known and known.uid == meta["uid"] and known.generation == meta.get("generation"):
            return  # our own status write (or metadata): the refresh loop has it
        self.declared[ref] = declared_from(body)
        if known and known.uid == meta["uid"]:
            self.declared[ref].status = known.status  # as we last wrote it
        await self.sync(ref)

    async def _forget(self, ref: QueueRef) -> None:
        async with self.locks.setdefault(ref, asyncio.Lock()):
            if ref in self.declared:
                return  # declared again meanwhile
            await self.broker.configure(*ref, None)
            self.forgotten.discard(ref)
            self.samples.pop(ref, None)
            self.rates.pop(ref, None)
            log.info("taskqueue %s/%s deleted: the queue's policy is back to defaults", *ref)

    async def sync(self, ref: QueueRef) -> None:
        """Make Redis hold the TaskQueue's policy, then write its status if it changed."""
        async with self.locks.setdefault(ref, asyncio.Lock()):
            d = self.declared.get(ref)
            if d is None:
                return
            stats: QueueStats | None = None
            throughput: float | None = None
            unavailable: str | None = None
            try:
                if d.policy is not None:
                    wanted = {**d.policy.config(), "owner": d.uid}
                    if await self.broker.config(*ref) != wanted:
                        await self.broker.configure(*ref, d.policy, owner=d.uid)
                        log.info("taskqueue %s/%s: policy written to redis: %s", *ref, wanted)
                stats = await self.inspector.stats(*ref)
                throughput = self._throughput(ref, stats.finished)
            except REDIS_ERRORS as e:
                unavailable = f"redis unavailable: {e}"
            status = queue_status(d, stats, throughput, unavailable, now_ms())
            if status != d.status and await self.kube.patch_status(PLURAL, *ref, d.uid, status):
                d.status = status

    def _throughput(self, ref: QueueRef, finished: int) -> float | None:
        """Finished tasks a second since the previous sample, sampled at most every half
        interval: a sync between refreshes (a spec change) reuses the last figure instead of a
        noisy one over a few milliseconds."""
        now = time.monotonic()
        last = self.samples.get(ref)
        if last is not None and now - last[0] < self.interval / 2:
            return self.rates.get(ref)
        self.samples[ref] = (now, finished)
        if last is None:
            return None
        self.rates[ref] = max(0, finished - last[1]) / (now - last[0])
        return self.rates[ref]

    async def _orphans(self) -> None:
        """Queues whose config a TaskQueue wrote that no longer exists (deleted while the
        operator was down)."""
        for ref in await self.inspector.queues():
            if ref not in self.declared and (await self.broker.config(*ref)).get("owner"):
                self.forgotten.add(ref)

    async def run(self, settle_seconds: float = 30.0) -> None:
        """Refresh every declared queue's status (and policy) on the interval; after
        `settle_seconds` (kopf has listed every TaskQueue by then), look for orphans once."""
        started = time.monotonic()
        orphans_checked = False
        while True:
            await asyncio.sleep(self.interval)
            if not orphans_checked and time.monotonic() - started >= settle_seconds:
                try:
                    await self._orphans()
                    orphans_checked = True
                except REDIS_ERRORS as e:
                    log.warning("could not look for orphaned queue policies: %s", e)
            for ref in list(self.forgotten):
                try:
                    await self._forget(ref)
                except REDIS_ERRORS as e:
                    log.warning("taskqueue %s/%s: could not reset its policy: %s", *ref, e)
            for ref in list(self.declared):
                try:
                    await self.sync(ref)
                except Exception:  # one TaskQueue's trouble must not stop the others
                    log.exception("taskqueue %s/%s: refresh failed; the next one retries", *ref)


@kopf.on.event(*RESOURCE)
async def taskqueue_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Every watch event of a TaskQueue (no finalizer, no kopf bookkeeping on the object)."""
    meta = body["metadata"]
    try:
        await memo.taskqueues.on_event(event.get("type"), dict(body))
    except REDIS_ERRORS as e:  # the next refresh writes it
        log.warning("taskqueue %s/%s: redis unavailable (%s)", meta["namespace"], meta["name"], e)
