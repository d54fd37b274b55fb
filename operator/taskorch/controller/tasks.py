"""kopf handlers for Task: validate, enqueue (the UID is the task id), cancel, and the watch
events that feed the resync and TTL tracker."""

from __future__ import annotations

import json
import logging
from typing import Any

import kopf
import redis.exceptions
from pydantic import ValidationError

from taskorch.api.base import GROUP, VERSION, duration_seconds
from taskorch.api.task import TaskPhase, TaskSpec, priority_level
from taskorch.controller.kube import Kube
from taskorch.controller.status import condition, epoch_seconds, failed_status
from taskorch.queue.broker import Broker
from taskorch.queue.model import TaskRequest, now_ms

log = logging.getLogger("taskorch.tasks")
MAX_PAYLOAD_BYTES = 64 * 1024
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
RESOURCE = (GROUP, VERSION, "tasks")


class Refused(Exception):
    """A Task that can never be enqueued as written: it fails with this reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Waiting(Exception):
    """A Task that cannot be enqueued yet (a missing or unreadable payloadFrom source): it stays
    Pending with this reason and is retried."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def build_request(
    kube: Kube, spec: dict[str, Any], meta: dict[str, Any], namespace: str
) -> TaskRequest:
    try:
        task = TaskSpec.model_validate(spec)
    except ValidationError as e:
        raise Refused("InvalidSpec", str(e)) from e
    payload = task.payload
    for src in task.payload_from or []:
        if not isinstance(payload, dict | None):
            raise Refused("InvalidSpec", "payloadFrom needs an object payload")
        ref = src.secret_key_ref or src.config_map_key_ref
        kind = "secret" if src.secret_key_ref else "configmap"
        assert ref is not None
        try:
            value = await kube.read_key(namespace, kind, ref.name, ref.key)
        except KeyError as e:
            # The Secret may be created after the Task: wait rather than fail.
            raise Waiting("PayloadFromMissing", f"payloadFrom: {e.args[0]}") from e
        except PermissionError as e:
            # RBAC may be granted later (Helm value rbac.readSecrets): wait rather than fail.
            raise Waiting("PayloadFromForbidden", f"payloadFrom: {e}") from e
        payload = {**(payload or {}), src.field: value}
    size = len(json.dumps(payload))  # what goes into Redis, payloadFrom values included
    if size > MAX_PAYLOAD_BYTES:
        raise Refused("PayloadTooLarge", f"payload is {size} bytes, over {MAX_PAYLOAD_BYTES}")
    created = epoch_seconds(meta["creationTimestamp"])
    run_at = task.run_at.timestamp() if task.run_at else None
    if task.delay:
        run_at = created + duration_seconds(task.delay)
    return TaskRequest(
        type=task.type,
        payload=payload,
        id=meta["uid"],
        priority=priority_level(task.priority),
        retry=task.retry.model_dump(by_alias=True, exclude_none=True) if task.retry else None,
        timeout=duration_seconds(task.timeout) if task.timeout else None,
        run_at=run_at,
        deadline=created + duration_seconds(task.deadline) if task.deadline else None,
        idempotency_key=task.idempotency_key,
        notify=True,
        cr_name=meta["name"],
        generation=int(meta.get("generation") or 1),
    )


async def enqueue(
    memo: Any,
    spec: dict[str, Any],
    meta: dict[str, Any],
    namespace: str,
    patch: kopf.Patch,
    retry: int,
) -> None:
    try:
        request = await build_request(memo.kube, spec, meta, namespace)
    except Refused as e:
        patch.status.update(failed_status(e.reason, str(e), meta.get("generation"), now_ms()))
        await memo.kube.event(
            "Task", namespace, meta["name"], meta["uid"], "Warning", e.reason, str(e)
        )
        return
    except Waiting as e:
        patch.status["phase"] = TaskPhase.Pending.value
        patch.status["conditions"] = [
            condition("Succeeded", "Unknown", e.reason, str(e), now_ms(), meta.get("generation"))
        ]
        raise kopf.TemporaryError(str(e), delay=min(5 * 2**retry, 60)) from e
    try:
        await memo.broker.enqueue_many(namespace, spec.get("queue", "default"), [request])
    except REDIS_ERRORS as e:
        # Nothing is lost: kopf retries with backoff; the condition tells the user why it waits.
        patch.status["phase"] = TaskPhase.Pending.value
        patch.status["conditions"] = [
            condition(
                "QueueUnavailable",
                "True",
                "RedisUnreachable",
                str(e)[:300],
                now_ms(),
                meta.get("generation"),
            ),
        ]
        raise kopf.TemporaryError(f"redis unreachable: {e}", delay=min(2**retry, 30)) from e


@kopf.on.create(*RESOURCE)
async def task_created(
    spec: kopf.Spec,
    meta: kopf.Meta,
    namespace: str | None,
    memo: kopf.Memo,
    patch: kopf.Patch,
    retry: int,
    **_: Any,
) -> None:
    if spec.get("suspend"):
        patch.status["phase"] = TaskPhase.Pending.value
        patch.status["conditions"] = [
            condition(
                "Succeeded",
                "Unknown",
                "Suspended",
                "held until spec.suspend is false",
                now_ms(),
                meta.get("generation"),
            ),
        ]
        return
    await enqueue(memo, dict(spec), dict(meta), str(namespace), patch, retry)


@kopf.on.field(*RESOURCE, field="spec.suspend", old=True, new=False)
async def task_released(
    spec: kopf.Spec,
    meta: kopf.Meta,
    namespace: str | None,
    memo: kopf.Memo,
    patch: kopf.Patch,
    retry: int,
    **_: Any,
) -> None:
    await enqueue(memo, dict(spec), dict(meta), str(namespace), patch, retry)


@kopf.on.field(*RESOURCE, field="spec.cancel", new=True)
async def task_cancelled(
    spec: kopf.Spec, meta: kopf.Meta, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    queue = spec.get("queue", "default")
    try:
        await memo.broker.redis.hset(
            f"taskorch:{{{namespace}/{queue}}}:t:{meta['uid']}", "gen", meta.get("generation") or 1
        )
        await memo.broker.cancel(namespace, queue, meta["uid"])
    except REDIS_ERRORS as e:
        raise kopf.TemporaryError(f"redis unreachable: {e}", delay=5) from e


@kopf.on.event(*RESOURCE)
async def task_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Every watch event: feeds the tracker, and cancels a deleted Task in Redis.

    Deletion is seen here rather than by an on.delete handler because that would need a
    finalizer, and a finalizer keeps a Task from being deleted while the operator is down. A
    deletion the operator misses (down, or Redis unreachable) leaves the task to run once."""
    memo.tracker.observe(event.get("type"), dict(body))
    if event.get("type") == "DELETED":
        meta, spec = body["metadata"], body.get("spec", {})
        try:
            await memo.broker.cancel(meta["namespace"], spec.get("queue", "default"), meta["uid"])
        except REDIS_ERRORS as e:
            log.warning("could not cancel deleted %s/%s: %s", meta["namespace"], meta["name"], e)


async def reenqueue(
    broker: Broker, kube: Kube, spec: dict[str, Any], meta: dict[str, Any], namespace: str
) -> None:
    """Enqueue a Task again (the tracker's repair when Redis lost it); idempotent by UID."""
    try:
        request = await build_request(kube, spec, meta, namespace)
    except (Refused, Waiting) as e:
        log.warning("cannot enqueue %s/%s again: %s", namespace, meta.get("name"), e)
        return
    await broker.enqueue_many(namespace, spec.get("queue", "default"), [request])
