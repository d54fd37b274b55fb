"""Schedule glue: one loop wakes at each Schedule's next tick, asks controller/cron.py what to
do, and creates the child (a Task or Workflow named after the tick, so a tick fires once across
restarts and a standby takeover: a second create of the same name is refused by the API
server), cancels the one it replaces, deletes children past the history limits and writes the
status. No finalizer: the children carry an owner reference, so deleting the Schedule deletes
them (Kubernetes' garbage collector)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from taskorch.api.base import GROUP, VERSION
from taskorch.api.reasons import Reason
from taskorch.api.schedule import (
    LABEL,
    SCHEDULED_AT,
    ChildRef,
    ScheduleSpec,
    ScheduleStatus,
    child_body,
    child_kind,
)
from taskorch.api.task import TERMINAL_PHASES
from taskorch.api.workflow import TERMINAL_WORKFLOW_PHASES
from taskorch.controller.cron import Cron, InvalidSchedule, plan
from taskorch.controller.kube import KubeAPI
from taskorch.controller.status import epoch_seconds, held_condition

log = logging.getLogger("taskorch.schedules")
RESOURCE = (GROUP, VERSION, "schedules")
PLURAL = "schedules"
# While children run, their phases in status are refreshed this often.
ACTIVE_REFRESH_SECONDS = 10.0
# The longest the loop sleeps: a clock jump or a lost wake-up costs at most this.
MAX_SLEEP_SECONDS = 5.0
TERMINAL = {p.value for p in TERMINAL_PHASES} | {p.value for p in TERMINAL_WORKFLOW_PHASES}
ScheduleRef = tuple[str, str]


def _time(ts: str | None) -> datetime | None:
    return datetime.fromtimestamp(epoch_seconds(ts), UTC) if ts else None


def _utc(t: datetime | None) -> datetime | None:
    """Status times in UTC, as Kubernetes writes them (the tick's own zone is the spec's)."""
    return t.astimezone(UTC) if t else None


def _stamp(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if t else None


class ScheduleRunner:
    def __init__(self, kube: KubeAPI) -> None:
        self.kube = kube
        self.schedules: dict[ScheduleRef, dict[str, Any]] = {}
        self.written: dict[ScheduleRef, dict[str, Any]] = {}  # status as last written
        self.next_eval: dict[ScheduleRef, float] = {}  # epoch seconds
        self.wake = asyncio.Event()

    async def on_event(self, type_: str | None, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        ref = (meta["namespace"], meta["name"])
        if type_ == "DELETED":
            self.schedules.pop(ref, None)
            self.written.pop(ref, None)
            self.next_eval.pop(ref, None)
            return
        known = self.schedules.get(ref)
        self.schedules[ref] = body
        if known is None or known["metadata"]["uid"] != meta["uid"]:
            self.written[ref] = dict(body.get("status") or {})
        elif known["metadata"].get("generation") == meta.get("generation"):
            return  # our own status write, or metadata: nothing to decide
        self.next_eval[ref] = 0  # look now: a new spec may change the next tick
        self.wake.set()

    async def run(self) -> None:
        while True:
            now = datetime.now(UTC).timestamp()
            for ref in [r for r, t in self.next_eval.items() if t <= now]:
                try:
                    await self.evaluate(ref)
                except Exception:  # one Schedule's trouble must not stop the others
                    log.exception("schedule %s/%s: evaluation failed; retrying in 1 s", *ref)
                    self.next_eval[ref] = now + 1
            upcoming = min(self.next_eval.values(), default=math.inf)
            sleep = min(MAX_SLEEP_SECONDS, max(0.0, upcoming - datetime.now(UTC).timestamp()))
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=sleep)

    async def evaluate(self, ref: ScheduleRef) -> None:
        body = self.schedules.get(ref)
        if body is None:
            return
        meta = body["metadata"]
        generation = meta.get("generation")
        prior = self.written.get(ref, {})
        try:
            spec = ScheduleSpec.model_validate(body.get("spec") or {})
            cron = Cron.parse(spec.schedule, spec.time_zone)
        except (ValidationError, InvalidSchedule) as e:
            status = {
                **prior,
                "conditions": [self._ready(prior, "False", Reason.InvalidSpec, str(e), generation)],
                "observedGeneration": generation,
            }
            status.pop("nextScheduleTime", None)
            await self._write(ref, meta["uid"], status)
            self.next_eval[ref] = math.inf  # until the spec changes
            return

        kind, plural = child_kind(body["spec"])
        children = await self._children(plural, ref, meta["uid"])
        active = [c for c in children if (c.get("status") or {}).get("phase") not in TERMINAL]
        now = datetime.now(UTC)
        since = _time(prior.get("lastTickTime")) or _time(meta["creationTimestamp"]) or now
        decision = plan(cron, spec, since, now, [c["metadata"]["name"] for c in active])
        last_schedule = _time(prior.get("lastScheduleTime"))
        skipped, last_skip = int(prior.get("skipped") or 0), prior.get("lastSkip")
        if decision.tick is not None:
            if decision.fire:
                for name in decision.cancel:
                    await self.kube.patch(plural, ref[0], name, {"spec": {"cancel": True}})
                    await self._event(body, "Normal", "Replaced", f"cancelled {kind} {name}")
                name = f"{ref[1]}-{cron.child_suffix(decision.tick)}"
                created = await self.kube.create(
                    plural, ref[0], child_body(body, name, decision.tick)
                )
                if created:
                    await self._event(body, "Normal", "Scheduled", f"created {kind} {name}")
                    log.info("schedule %s/%s: created %s %s", *ref, kind, name)
                last_schedule = decision.tick
            else:
                skipped += 1
                last_skip = f"{_stamp(decision.tick)}: {decision.skip_reason}"
                await self._event(body, "Warning", "Skipped", last_skip)
            if decision.missed:
                await self._event(
                    body, "Warning", "MissedRuns", f"{decision.missed} earlier tick(s) not run"
                )
            children = await self._children(plural, ref, meta["uid"])
        await self._trim_history(plural, ref[0], spec, children)
        active = [c for c in children if (c.get("status") or {}).get("phase") not in TERMINAL]
        succeeded = [
            _time((c.get("status") or {}).get("completionTime"))
            for c in children
            if (c.get("status") or {}).get("phase") == "Succeeded"
        ]
        last_success = max(
            [t for t in [*succeeded, _time(prior.get("lastSuccessfulTime"))] if t], default=None
        )
        next_tick = cron.next_after(now)
        status = ScheduleStatus(
            conditions=[
                self._ready(prior, "True", Reason.Configured, "the schedule is valid", generation)
            ],
            observed_generation=generation,
            last_schedule_time=_utc(last_schedule),
            last_tick_time=_utc(decision.tick) or _time(prior.get("lastTickTime")),
            next_schedule_time=None if spec.suspend else _utc(next_tick),
            last_successful_time=last_success,
            active=[
                ChildRef(
                    name=c["metadata"]["name"],
                    kind=kind,
                    phase=(c.get("status") or {}).get("phase"),
                    scheduled_time=_time(c["metadata"].get("annotations", {}).get(SCHEDULED_AT)),
                )
                for c in sorted(active, key=lambda c: c["metadata"]["name"])
            ]
            or None,
            skipped=skipped or None,
            last_skip=last_skip,
        ).model_dump(by_alias=True, mode="json", exclude_none=True)
        await self._write(ref, meta["uid"], status)
        wake_at = next_tick.timestamp()
        if active:
            wake_at = min(wake_at, now.timestamp() + ACTIVE_REFRESH_SECONDS)
        self.next_eval[ref] = wake_at

    async def _children(self, plural: str, ref: ScheduleRef, uid: str) -> list[dict[str, Any]]:
        """The Schedule's children (by label, and owned by this very Schedule: not a deleted
        namesake's)."""
        return [
            c
            for c in await self.kube.list_objects(plural, ref[0], f"{LABEL}={ref[1]}")
            if any(o.get("uid") == uid for o in c["metadata"].get("ownerReferences") or [])
        ]

    async def _trim_history(
        self, plural: str, namespace: str, spec: ScheduleSpec, children: list[dict[str, Any]]
    ) -> None:
        """Delete finished children past the history limits, oldest first."""

        def newest_first(phase_ok: bool) -> list[dict[str, Any]]:
            done = [
                c
                for c in children
                if (phase := (c.get("status") or {}).get("phase")) in TERMINAL
                and (phase == "Succeeded") == phase_ok
            ]
            return sorted(done, key=lambda c: c["metadata"]["creationTimestamp"], reverse=True)

        extra = newest_first(True)[spec.successful_history_limit :]
        extra += newest_first(False)[spec.failed_history_limit :]
        for c in extra:
            await self.kube.delete(plural, namespace, c["metadata"]["name"], c["metadata"]["uid"])
            children.remove(c)

    def _ready(
        self, prior: dict[str, Any], status: str, reason: str, message: str, generation: int | None
    ) -> dict[str, Any]:
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        held = held_condition(
            prior.get("conditions"), "Ready", status, reason, message, generation, now_ms
        )
        return held.model_dump(by_alias=True, mode="json", exclude_none=True)

    async def _write(self, ref: ScheduleRef, uid: str, status: dict[str, Any]) -> None:
        if status != self.written.get(ref) and await self.kube.patch_status(
            PLURAL, *ref, uid, status
        ):
            self.written[ref] = status

    async def _event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        try:
            await self.kube.event(
                "Schedule", meta["namespace"], meta["name"], meta["uid"], type_, reason, message
            )
        except (ApiException, OSError) as e:
            log.debug("event for schedule %s/%s not posted: %s", meta["namespace"], meta["name"], e)


@kopf.on.event(*RESOURCE)
async def schedule_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Every watch event of a Schedule (no finalizer, no kopf bookkeeping on the object)."""
    await memo.schedules.on_event(event.get("type"), dict(body))
