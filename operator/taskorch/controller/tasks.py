"""Task admission: validate and enqueue (the UID is the task id). The Tasks' watch events come
from controller/task_watch.py, not from kopf."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from taskorch import tracing
from taskorch.api.base import duration_seconds
from taskorch.api.reasons import Reason
from taskorch.api.task import TaskSpec, priority_level, runnable, task_queue
from taskorch.controller.container_tasks import CONTAINERS_DISABLED, Owner, with_job
from taskorch.controller.job_runner import JobRunners
from taskorch.controller.kube import KubeAPI
from taskorch.controller.status import (
    cancelled_status,
    duplicate_status,
    epoch_seconds,
    failed_status,
)
from taskorch.errors import Refused, Waiting
from taskorch.queue.broker import Broker
from taskorch.queue.model import MAX_PAYLOAD_BYTES, TaskRequest, dumps, now_ms, size_in_bytes

log = logging.getLogger("taskorch.tasks")


async def build_request(
    kube: KubeAPI,
    spec: dict[str, Any],
    meta: dict[str, Any],
    namespace: str,
    container_tasks: bool = False,
) -> TaskRequest:
    try:
        task = TaskSpec.model_validate(spec)
    except ValidationError as e:
        raise Refused(Reason.InvalidSpec, str(e)) from e
    if task.container is not None and not container_tasks:
        raise Refused(Reason.ContainerTasksDisabled, CONTAINERS_DISABLED)
    payload = task.payload
    for src in task.payload_from or []:
        if not isinstance(payload, dict | None):
            raise Refused(Reason.InvalidSpec, "payloadFrom needs an object payload")
        ref = src.secret_key_ref or src.config_map_key_ref
        kind = "secret" if src.secret_key_ref else "configmap"
        assert ref is not None
        try:
            value = await kube.read_key(namespace, kind, ref.name, ref.key)
        except KeyError as e:
            # The Secret may be created after the Task: wait rather than fail.
            raise Waiting(Reason.PayloadFromMissing, f"payloadFrom: {e.args[0]}") from e
        except PermissionError as e:
            # RBAC may be granted later (Helm value rbac.readSecrets): wait rather than fail.
            raise Waiting(Reason.PayloadFromForbidden, f"payloadFrom: {e}") from e
        payload = {**(payload or {}), src.field: value}
    type_, queued_payload = runnable(task, payload)
    timeout = duration_seconds(task.timeout) if task.timeout else None
    if task.container is not None:
        # The Jobs are the Task's; Kubernetes enforces the timeout (container_tasks.py).
        owner = Owner(kind="Task", name=meta["name"], uid=meta["uid"])
        queued_payload = with_job(queued_payload, owner, meta["name"], timeout)
        timeout = None
    # what goes into Redis: payloadFrom values included, or a command's argv and env
    size = size_in_bytes(dumps(queued_payload))
    if size > MAX_PAYLOAD_BYTES:
        raise Refused(Reason.PayloadTooLarge, f"payload is {size} bytes, over {MAX_PAYLOAD_BYTES}")
    created = epoch_seconds(meta["creationTimestamp"])
    run_at = task.run_at.timestamp() if task.run_at else None
    if task.delay:
        run_at = created + duration_seconds(task.delay)
    return TaskRequest(
        type=type_,
        payload=queued_payload,
        id=meta["uid"],
        priority=priority_level(task.priority),
        retry=task.retry.model_dump(by_alias=True, exclude_none=True) if task.retry else None,
        timeout=timeout,
        run_at=run_at,
        deadline=created + duration_seconds(task.deadline) if task.deadline else None,
        idempotency_key=task.idempotency_key,
        notify=True,
        cr_name=meta["name"],
        generation=int(meta.get("generation") or 1),
        # Workers keep these values out of every error text that reaches the status.
        redact=tuple(src.field for src in task.payload_from or []),
        concurrency_key=task.concurrency_key or "",
        max_concurrent=task.max_concurrent,
    )


Enqueue = Callable[[str, str, TaskRequest], Awaitable[str]]  # namespace, queue -> the task's id


async def admit(
    broker: Broker,
    kube: KubeAPI,
    spec: dict[str, Any],
    meta: dict[str, Any],
    namespace: str,
    enqueue: Enqueue | None = None,
    container_tasks: bool = False,
) -> dict[str, Any] | None:
    """Enqueue the Task, or decide it never runs. Returns the status to write for a Task that
    never reaches a worker (cancelled, refused, a duplicate), None once it is enqueued (the
    status writer follows it from then on). Raises Waiting while a payloadFrom source is not
    readable yet, and Redis errors: both are retried. `enqueue` (admission's batcher) replaces
    a round trip of its own."""
    generation = meta.get("generation")
    if spec.get("cancel"):
        return cancelled_status(generation, now_ms())
    try:
        request = await build_request(kube, spec, meta, namespace, container_tasks)
    except Refused as e:
        await kube.event("Task", namespace, meta["name"], meta["uid"], "Warning", e.reason, str(e))
        return failed_status(e.reason, str(e), generation, now_ms())
    queue = task_queue(spec)
    # One Task, one trace, whose id is the Task's UID (tracing.py).
    with tracing.enqueue_span(namespace, queue, request.type, 1, trace_uid=meta["uid"]) as tp:
        if tp:
            request = dataclasses.replace(request, traceparent=tp)
        if enqueue is not None:
            task_id = await enqueue(namespace, queue, request)
        else:
            [task_id] = await broker.enqueue_many(namespace, queue, [request])
    if task_id == request.id:
        return None
    # Another task holds the idempotencyKey: this one never runs, and says which task did.
    holder_info = await broker.get(namespace, queue, task_id)
    holder = (
        f"Task {namespace}/{holder_info.cr_name}"
        if holder_info and holder_info.cr_name
        else f"task {task_id}"
    )
    status = duplicate_status(request.idempotency_key or "", task_id, holder, generation, now_ms())
    message = status["conditions"][0]["message"]
    await kube.event(
        "Task", namespace, meta["name"], meta["uid"], "Normal", Reason.Duplicate, message
    )
    return status


async def reenqueue(
    broker: Broker,
    kube: KubeAPI,
    jobs: JobRunners | None,
    spec: dict[str, Any],
    meta: dict[str, Any],
    namespace: str,
) -> None:
    """Enqueue a Task again (the tracker's repair when Redis lost it); idempotent by UID."""
    if jobs is not None and spec.get("container"):
        jobs.ensure(namespace)
    try:
        status = await admit(broker, kube, spec, meta, namespace, None, jobs is not None)
    except Waiting as e:
        log.warning("cannot enqueue %s/%s again yet: %s", namespace, meta.get("name"), e)
        return
    if status is not None:
        await kube.patch_status("tasks", namespace, meta["name"], meta["uid"], status)
