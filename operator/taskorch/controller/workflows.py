"""Workflow glue: watch events and step changes in, step tasks and status out.

Every decision is the pure engine's (dag.advance); this module reads what it needs from Redis,
evaluates `when`/`forEach` (CEL), renders step payloads, enqueues step tasks and writes status.
It is called for a Workflow's watch events and, through the status writer, whenever one of its
steps changes state, so a step finishing advances its workflow within one status batch window.

What the operator decided stays in Redis, in the workflow's hash (keys.workflow): the spec it
first saw (later edits of the steps are ignored), each `when` answer, each `forEach` list and
each step that could not start. With the step tasks' deterministic ids (`<uid>.<step>[.<i>]`)
that is the whole state: an operator restart resumes from it. No finalizer: deleting a
Workflow cancels its steps when the operator sees the deletion.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections import defaultdict
from typing import Any, cast

import kopf
import redis.exceptions
from pydantic import JsonValue, ValidationError

from taskorch import tracing
from taskorch.api.base import GROUP, VERSION, duration_seconds
from taskorch.api.container import CONTAINER_TYPE
from taskorch.api.reasons import Reason
from taskorch.api.task import COMMAND_TYPE, command_payload, container_payload, priority_level
from taskorch.api.workflow import TERMINAL_WORKFLOW_PHASES, WorkflowSpec, WorkflowStep
from taskorch.controller import expressions
from taskorch.controller.container_tasks import (
    CONTAINERS_DISABLED,
    Owner,
    argv_as_text,
    delete_running_jobs,
    step_queue,
    with_job,
)
from taskorch.controller.dag import Advance, StepState, advance, find_cycle
from taskorch.controller.expiry import Expiries
from taskorch.controller.job_runner import JobRunners
from taskorch.controller.kube import KubeAPI
from taskorch.controller.status import epoch_seconds
from taskorch.controller.templating import MissingReference, render
from taskorch.controller.workflow_status import invalid_status, step_result, workflow_status
from taskorch.queue import keys
from taskorch.queue.broker import Broker
from taskorch.queue.model import TERMINAL, TaskInfo, TaskRef, TaskRequest, dumps, now_ms, text

log = logging.getLogger("taskorch.workflows")
RESOURCE = (GROUP, VERSION, "workflows")
REDIS_ERRORS = (redis.exceptions.RedisError, OSError)
# The only spec fields read live; the rest as first seen.
LIVE_FIELDS = ("suspend", "cancel", "ttlSecondsAfterFinished")
# Set (to any new value) to retry a failed Workflow from the point of failure, GitOps-style;
# `taskorch workflow retry NAME` sets it to the time.
RETRY_ANNOTATION = "taskorch.io/retry"


def item_id(uid: str, step: str, index: int | None) -> str:
    return f"{uid}.{step}" if index is None else f"{uid}.{step}.{index}"


class WorkflowRunner:
    def __init__(self, broker: Broker, kube: KubeAPI, jobs: JobRunners | None = None) -> None:
        self.broker = broker
        self.kube = kube
        self.jobs = jobs  # the operator's job runners, when it runs container steps
        self.bodies: dict[str, dict[str, Any]] = {}  # uid -> latest body seen
        self.generations: dict[str, int] = {}  # uid -> generation last reconciled
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.written: dict[str, dict[str, Any]] = {}  # uid -> status last written
        self.wakeups: dict[str, asyncio.Task[None]] = {}  # uid -> reconcile at its deadline
        self.expiries = Expiries(kube, "workflows")

    # -- watch events ---------------------------------------------------------------------------

    async def on_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        uid = meta["uid"]
        if event_type == "DELETED":
            self.bodies.pop(uid, None)
            self.generations.pop(uid, None)
            self.written.pop(uid, None)
            self.expiries.forget(uid)
            wakeup = self.wakeups.pop(uid, None)
            if wakeup is not None:
                wakeup.cancel()
            await self._cancel_steps(meta["namespace"], body, uid)
            try:
                await self.broker.redis.delete(keys.workflow(meta["namespace"], uid))
            except REDIS_ERRORS as e:
                log.warning("could not forget deleted workflow %s: %s", uid, e)
            return
        self.bodies[uid] = body
        phase = (body.get("status") or {}).get("phase")
        self.expiries.follow(body, finished=phase in TERMINAL_WORKFLOW_PHASES)
        generation = int(meta.get("generation") or 1)
        retry = (meta.get("annotations") or {}).get(RETRY_ANNOTATION)
        if retry and await self._retry(meta["namespace"], uid, retry):
            self.generations.pop(uid, None)
        # Status writes change no generation: only creation, a restart's listing, a change of
        # suspend/cancel and a retry need a reconcile from here; steps changing come via the
        # status writer, and the resync loop catches what an outage made us miss.
        if self.generations.get(uid) != generation:
            self.generations[uid] = generation
            await self.reconcile(meta["namespace"], meta["name"], uid)

    def _wake_at(self, namespace: str, name: str, uid: str, when: float) -> None:
        """Reconcile once more at `when` (a deadline), whatever else happens by then."""
        if uid in self.wakeups or when <= time.time():
            return

        async def wake() -> None:
            try:
                await asyncio.sleep(when - time.time())
                await self.reconcile(namespace, name, uid)
            finally:
                self.wakeups.pop(uid, None)

        self.wakeups[uid] = asyncio.create_task(wake(), name=f"deadline-{uid}")

    async def run(self, resync_seconds: float) -> None:
        """Reconcile every Workflow not ended, every `resync_seconds`: a reconcile that an
        outage interrupted (Redis, the API server) is never left waiting for an event."""
        while True:
            await asyncio.sleep(resync_seconds)
            for uid, body in list(self.bodies.items()):
                phase = self.written.get(uid, {}).get("phase")
                if phase in TERMINAL_WORKFLOW_PHASES:
                    continue
                meta = body["metadata"]
                try:
                    await self.reconcile(meta["namespace"], meta["name"], uid)
                except Exception:  # one Workflow's trouble must not stop the others' resync
                    log.exception(
                        "resync of workflow %s/%s failed", meta["namespace"], meta["name"]
                    )

    async def _retry(self, namespace: str, uid: str, token: str) -> bool:
        """Retry from the point of failure, once per value of the retry annotation: failed
        steps run again (dead tasks back from the DLQ, steps that could not start decided
        again), what they skipped follows, and finally runs again; succeeded steps keep their
        results. Returns whether a retry was done now."""
        state_key = keys.workflow(namespace, uid)
        saved = await self._load(state_key)
        if saved.get("retried") == token or "spec" not in saved:
            return False
        spec = WorkflowSpec.model_validate(json.loads(saved["spec"]))
        steps = {s.name: s for s in [*spec.steps, *(spec.finally_ or [])]}
        records = await self._records(namespace, spec, uid, steps, saved)
        final = {s.name for s in spec.finally_ or []}
        for name, recs in records.items():
            dead = [i for i in recs.values() if i.state.value == "dead"]
            by_queue: defaultdict[str, list[str]] = defaultdict(list)
            for info in dead:
                by_queue[info.queue].append(info.id)
            for queue, ids in by_queue.items():
                await self.broker.requeue_dead(namespace, queue, ids)
            if name in final:  # ran after the failure: runs again after the retried steps
                for info in recs.values():
                    if info.state in TERMINAL:
                        await self.broker.redis.delete(keys.task(namespace, info.queue, info.id))
        stale = [k for k in saved if k.startswith(("error:", "when:", "items:"))]
        stale = [k for k in stale if k.startswith("error:") or k.split(":", 1)[1] in final]
        await self.broker.redis.hdel(state_key, "ended", *stale)
        await self.broker.redis.hset(state_key, "retried", token)
        log.info("workflow %s/%s: retrying from the point of failure", namespace, uid)
        return True

    # -- reconcile ------------------------------------------------------------------------------

    async def _load(self, state_key: str) -> dict[str, str]:
        """The workflow's decisions hash (keys.workflow), decoded."""
        raw = await self.broker.redis.hgetall(state_key)
        return {text(k): text(v) for k, v in raw.items()}

    async def reconcile(self, namespace: str, name: str, uid: str) -> None:
        async with self.locks[uid]:
            body = self.bodies.get(uid) or await self.kube.get("workflows", namespace, name)
            if body is None or body["metadata"]["uid"] != uid:
                return  # deleted meanwhile
            status = await self._reconcile(namespace, body)
            if status == body.get("status") and uid not in self.written:
                self.written[uid] = status  # e.g. after a restart: nothing to write
            if status != self.written.get(uid) and await self.kube.patch_status(
                "workflows", namespace, name, uid, status
            ):
                self.written[uid] = status

    async def _reconcile(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """The Workflow's status, after doing what the engine decided."""
        meta, live = body["metadata"], body.get("spec") or {}
        uid, generation = meta["uid"], meta.get("generation")
        created_ms = int(epoch_seconds(meta["creationTimestamp"]) * 1000)
        state_key = keys.workflow(namespace, uid)
        saved = await self._load(state_key)
        written = body.get("status") or {}
        if saved.get("ended") and written.get("phase") in TERMINAL_WORKFLOW_PHASES:
            # Ended and said so: its step records may have expired since, and must not look
            # like steps never run. Only a retry (which clears the mark) makes it run again.
            # (Ended but not yet written, as when the operator died between the two: the end
            # is computed again below from the step records, which are still there.)
            return dict(written)
        first_seen = json.loads(saved["spec"]) if "spec" in saved else live
        document = {**first_seen, **{f: live[f] for f in LIVE_FIELDS if f in live}}
        try:
            spec = WorkflowSpec.model_validate(document)
        except ValidationError as e:
            return invalid_status(Reason.InvalidSpec, str(e), generation, now_ms())
        containers = [s.name for s in [*spec.steps, *(spec.finally_ or [])] if s.container]
        if containers and self.jobs is None:
            message = f"steps {', '.join(containers)}: {CONTAINERS_DISABLED}"
            return invalid_status(Reason.ContainerTasksDisabled, message, generation, now_ms())
        for group in (spec.steps, spec.finally_ or []):
            if cycle := find_cycle(group):
                message = "dependency cycle: " + " → ".join(cycle)
                return invalid_status(Reason.InvalidSpec, message, generation, now_ms())
        if "spec" not in saved:
            kept = {k: v for k, v in live.items() if k not in LIVE_FIELDS}
            await self.broker.redis.hset(state_key, "spec", dumps(kept))
        steps = {s.name: s for s in [*spec.steps, *(spec.finally_ or [])]}
        deadline_passed = False
        if spec.deadline:
            due = created_ms / 1000 + duration_seconds(spec.deadline)
            deadline_passed = time.time() >= due
            self._wake_at(namespace, meta["name"], uid, due)
        for _ in range(len(steps) + 2):  # each pass decides, or fails, at least one step
            records = await self._records(namespace, spec, uid, steps, saved)
            adv = advance(spec, _observed(steps, saved, records), deadline_passed=deadline_passed)
            results = _results(steps, saved, records)
            decided = self._decide(adv, steps, results) or await self._enqueue(
                namespace, meta["name"], spec, uid, adv, steps, saved, results
            )
            if not decided:
                break
            await self.broker.redis.hset(state_key, mapping=cast("dict[Any, Any]", decided))
            saved.update(decided)
        if spec.cancel or deadline_passed:
            await self._cancel_steps(namespace, body, uid, spec, saved, records)
        errors = {k.removeprefix("error:"): v for k, v in saved.items() if k.startswith("error:")}
        if adv.phase in TERMINAL_WORKFLOW_PHASES:
            if not saved.get("ended"):
                tracing.workflow_span(
                    uid, meta["name"], namespace, created_ms * 10**6, now_ms() * 10**6, adv.phase
                )
            await self.broker.redis.hset(state_key, "ended", adv.phase.value)
        return workflow_status(
            spec, adv, records, results, errors, generation, created_ms, now_ms()
        )

    async def _records(
        self,
        namespace: str,
        spec: WorkflowSpec,
        uid: str,
        steps: dict[str, WorkflowStep],
        saved: dict[str, str],
    ) -> dict[str, dict[int, TaskInfo]]:
        refs: list[tuple[str, int, TaskRef]] = []
        for name, step in steps.items():
            queue = step_queue(step, spec)
            if step.for_each is None:
                refs.append((name, 0, TaskRef(namespace, queue, item_id(uid, name, None))))
            elif f"items:{name}" in saved:
                for i in range(len(json.loads(saved[f"items:{name}"]))):
                    refs.append((name, i, TaskRef(namespace, queue, item_id(uid, name, i))))
        infos = await self.broker.get_many([r for _, _, r in refs])
        records: dict[str, dict[int, TaskInfo]] = {}
        for (name, i, _), info in zip(refs, infos, strict=True):
            if info is not None:
                records.setdefault(name, {})[i] = info
        return records

    def _decide(
        self, adv: Advance, steps: dict[str, WorkflowStep], results: dict[str, Any]
    ) -> dict[str, str]:
        """Evaluate the `when` and `forEach` the engine asks for; a failure fails the step."""
        decided: dict[str, str] = {}
        for name in adv.evaluate:
            step = steps[name]
            try:
                if step.when and f"when:{name}" not in decided:
                    decided[f"when:{name}"] = (
                        "1" if expressions.condition(step.when, results) else "0"
                    )
                    if decided[f"when:{name}"] == "0" or step.for_each is None:
                        continue
                if isinstance(step.for_each, str):
                    decided[f"items:{name}"] = dumps(expressions.items(step.for_each, results))
                elif step.for_each is not None:
                    decided[f"items:{name}"] = dumps(step.for_each)
            except expressions.ExpressionError as e:
                decided[f"error:{name}"] = str(e)
        return decided

    async def _enqueue(
        self,
        namespace: str,
        name: str,
        spec: WorkflowSpec,
        uid: str,
        adv: Advance,
        steps: dict[str, WorkflowStep],
        saved: dict[str, str],
        results: dict[str, Any],
    ) -> dict[str, str]:
        """Enqueue what the engine says; returns the steps that failed to render (a missing
        reference), which changes the engine's view."""
        failed: dict[str, str] = {}
        by_queue: defaultdict[str, list[TaskRequest]] = defaultdict(list)
        for ref in adv.enqueue:
            step = steps[ref.step]
            items = json.loads(saved.get(f"items:{ref.step}", "[]"))
            item = items[ref.item] if ref.item is not None else None
            template: dict[str, JsonValue]
            if step.container is not None:
                type_ = CONTAINER_TYPE
                # Only its command and args are templates (as documented, and as the operator's
                # check of the owner's declared container expects).
                container = container_payload(step.container)
                template = {k: container[k] for k in ("command", "args") if k in container}
            elif step.command is not None:
                type_ = COMMAND_TYPE
                template = command_payload(step.command, step.env, step.working_dir)
            else:
                type_, template = step.type or "", step.payload or {}
            try:
                payload = render(template, results, item, ref.item)
                if step.container is not None:
                    payload = {"container": {**container, **argv_as_text(payload)}}
            except MissingReference as e:
                failed[f"error:{ref.step}"] = str(e)
                continue
            retry = step.retry.model_dump(by_alias=True, exclude_none=True) if step.retry else None
            timeout = duration_seconds(step.timeout) if step.timeout else None
            task_id = item_id(uid, ref.step, ref.item)
            if step.container is not None:
                # The Job is the Workflow's; Kubernetes enforces the timeout (job_outcome.py).
                suffix = ref.step if ref.item is None else f"{ref.step}-{ref.item}"
                owner = Owner(kind="Workflow", name=name, uid=uid)
                payload = with_job(payload, owner, f"{name}-{suffix}", timeout)
                timeout = None
                if self.jobs is not None:
                    self.jobs.ensure(namespace)
            by_queue[step_queue(step, spec)].append(
                TaskRequest(
                    type=type_,
                    payload=payload,
                    id=task_id,
                    priority=priority_level(step.priority or spec.priority),
                    retry=retry,
                    timeout=timeout,
                    notify=True,
                    workflow=f"{name}/{uid}",
                    concurrency_key=step.concurrency_key or "",
                    max_concurrent=step.max_concurrent,
                )
            )
        for queue, requests in by_queue.items():
            # Steps are children of the Workflow's span, whose ids come from its UID.
            parent = tracing.workflow_parent(uid) if tracing.enabled() else None
            with tracing.enqueue_span(
                namespace, queue, requests[0].type, len(requests), parent=parent
            ) as tp:
                if tp:
                    requests = [dataclasses.replace(r, traceparent=tp) for r in requests]
                await self.broker.enqueue_many(namespace, queue, requests)
        return failed

    async def _cancel_steps(
        self,
        namespace: str,
        body: dict[str, Any],
        uid: str,
        spec: WorkflowSpec | None = None,
        saved: dict[str, str] | None = None,
        records: dict[str, dict[int, TaskInfo]] | None = None,
    ) -> None:
        """Cancel every step task not ended (a deleted or cancelled Workflow)."""
        try:
            if spec is None or saved is None or records is None:
                live = body.get("spec") or {}
                state_key = keys.workflow(namespace, uid)
                saved = await self._load(state_key)
                document = json.loads(saved["spec"]) if "spec" in saved else live
                spec = WorkflowSpec.model_validate(
                    {k: v for k, v in document.items() if k not in LIVE_FIELDS}
                )
                steps = {s.name: s for s in [*spec.steps, *(spec.finally_ or [])]}
                records = await self._records(namespace, spec, uid, steps, saved)
            for recs in records.values():
                for info in recs.values():
                    if info.state not in TERMINAL:
                        await self.broker.cancel(namespace, info.queue, info.id)
            if self.jobs is not None and any(
                s.container for s in spec.steps + (spec.finally_ or [])
            ):
                await delete_running_jobs(self.kube, namespace, uid)
        except (*REDIS_ERRORS, ValidationError) as e:
            log.warning("could not cancel the steps of workflow %s/%s: %s", namespace, uid, e)


def _observed(
    steps: dict[str, WorkflowStep], saved: dict[str, str], records: dict[str, dict[int, TaskInfo]]
) -> dict[str, StepState]:
    observed = {}
    for name in steps:
        when = saved.get(f"when:{name}")
        items = saved.get(f"items:{name}")
        observed[name] = StepState(
            condition=None if when is None else when == "1",
            items=None if items is None else len(json.loads(items)),
            error=saved.get(f"error:{name}"),
            states={i: info.state for i, info in records.get(name, {}).items()},
        )
    return observed


def _results(
    steps: dict[str, WorkflowStep], saved: dict[str, str], records: dict[str, dict[int, TaskInfo]]
) -> dict[str, Any]:
    """Results of the steps that succeeded (every item, for a forEach step)."""
    out: dict[str, Any] = {}
    for name, step in steps.items():
        recs = records.get(name, {})
        total = (
            len(json.loads(saved.get(f"items:{name}", "[]"))) if step.for_each is not None else 1
        )
        if len(recs) == total and all(r.state.value == "succeeded" for r in recs.values()):
            out[name] = step_result(step.for_each is not None, recs, total)
    return out


@kopf.on.event(*RESOURCE)
async def workflow_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Every watch event of a Workflow (no finalizer, no kopf bookkeeping on the object)."""
    try:
        await memo.workflows.on_event(event.get("type"), dict(body))
    except REDIS_ERRORS as e:
        meta = body["metadata"]
        log.warning("workflow %s/%s: redis unavailable (%s)", meta["namespace"], meta["name"], e)
