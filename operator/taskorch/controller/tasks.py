"""kopf handlers for Task: validate, enqueue (the UID is the task id), cancel, TTL, resync."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import kopf
import redis.exceptions
from pydantic import ValidationError

from taskorch.api.base import GROUP, VERSION, duration_seconds
from taskorch.api.task import TERMINAL_PHASES, TaskPhase, TaskSpec, priority_level
from taskorch.controller.status import condition, failed_status, task_status
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


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


async def build_request(
    memo: Any, spec: dict[str, Any], meta: dict[str, Any], namespace: str
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
            value = await memo.kube.read_key(namespace, kind, ref.name, ref.key)
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
    created = _epoch(meta["creationTimestamp"])
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
        request = await build_request(memo, spec, meta, namespace)
    except Refused as e:
        patch.status.update(failed_status(e.reason, str(e), meta.get("generation"), now_ms()))
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


@kopf.on.delete(*RESOURCE)
async def task_deleted(
    spec: kopf.Spec, meta: kopf.Meta, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    try:
        await memo.broker.cancel(namespace, spec.get("queue", "default"), meta["uid"])
    except REDIS_ERRORS as e:
        # Don't hold the user's delete hostage to Redis: the task may still run once.
        log.warning("could not cancel %s/%s in redis: %s", namespace, meta.get("name"), e)


def _finished_with_ttl(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return spec.get("ttlSecondsAfterFinished") is not None and bool(status.get("completionTime"))


@kopf.daemon(*RESOURCE, when=_finished_with_ttl, cancellation_timeout=1)
async def task_ttl(
    spec: kopf.Spec,
    status: kopf.Status,
    name: str,
    namespace: str | None,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    expires = _epoch(status["completionTime"]) + int(spec["ttlSecondsAfterFinished"])
    await stopped.wait(max(0.0, expires - datetime.now(UTC).timestamp()))
    if not stopped:
        await memo.kube.delete("tasks", str(namespace), name)


def _in_flight(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return not spec.get("suspend") and status.get("phase") not in {p.value for p in TERMINAL_PHASES}


@kopf.timer(*RESOURCE, interval=30, initial_delay=30, when=_in_flight)
async def task_resync(
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    namespace: str | None,
    memo: kopf.Memo,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    """Safety net for a lost stream entry or lost Redis data: re-read the record, or re-enqueue."""
    queue = spec.get("queue", "default")
    try:
        info = await memo.broker.get(str(namespace), queue, meta["uid"])
    except REDIS_ERRORS:
        return
    if info is None:
        if status.get("phase") in (None, TaskPhase.Pending.value) or status.get("taskId"):
            log.warning(
                "task %s/%s is missing from redis: enqueueing it again", namespace, meta["name"]
            )
            await enqueue(memo, dict(spec), dict(meta), str(namespace), patch, 0)
        return
    fresh = task_status(info, info.generation)
    if fresh["phase"] != status.get("phase") or fresh["attempts"] != status.get("attempts"):
        patch.status.update(fresh)
