"""The JSON HTTP API, `/api/v1`: submit (one or a batch), get, wait, cancel, requeue, queue
stats, pause/resume and the dead-letter queue. Every route names the RBAC action it needs on a
taskorch resource in the path's namespace (`create tasks` to submit, `update tasks` to cancel or
requeue...), checked with the caller's own token before anything is read or written."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Path, Query, Request

from taskorch import tracing
from taskorch.api.task import QUEUE_PATTERN, TASK_TYPE_PATTERN
from taskorch.queue.broker import Broker
from taskorch.queue.inspect import Inspector
from taskorch.queue.model import TERMINAL, TaskInfo, TaskRequest
from taskorch.server.actions import Actor
from taskorch.server.auth import Action, Caller, Gate, token_of
from taskorch.server.submit import (
    PayloadTooLarge,
    SubmitBatch,
    SubmitTask,
    Submitted,
    SubmittedBatch,
    to_request,
)
from taskorch.server.views import QueueView, TaskView

NAMESPACE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
Namespace = Annotated[str, Path(pattern=NAMESPACE, max_length=63)]
Queue = Annotated[str, Path(pattern=QUEUE_PATTERN, max_length=63)]
QueueParam = Annotated[
    str,
    Query(
        pattern=QUEUE_PATTERN,
        max_length=63,
        description="The task's queue.",
    ),
]
TaskId = Annotated[str, Path(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.:-]+$")]
MAX_WAIT_SECONDS = 60.0
MAX_PAGE = 500


# Dependencies are async even where they need not be: FastAPI runs a sync one in a thread.
async def broker(request: Request) -> Broker:
    b: Broker = request.app.state.broker
    return b


def gate(request: Request) -> Gate:
    g: Gate = request.app.state.gate
    return g


def actor(request: Request) -> Actor:
    a: Actor = request.app.state.actor
    return a


def bearer(request: Request) -> str | None:
    """The caller's token, to act on Kubernetes objects as them."""
    return token_of(request.headers.get("authorization"))


async def caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> Caller:
    return await gate(request).caller(authorization)


CallerDep = Annotated[Caller, Depends(caller)]


def allowed(verb: str, resource: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the caller, once RBAC lets them `verb resource` in the path's namespace."""

    async def check(
        request: Request, namespace: Namespace, who: Annotated[Caller, Depends(caller)]
    ) -> Caller:
        await gate(request).check(who, Action(verb, resource, namespace))
        return who

    return check


router = APIRouter(prefix="/api/v1")
BrokerDep = Annotated[Broker, Depends(broker)]


def _task_url(namespace: str, queue: str, task_id: str) -> str:
    return f"/api/v1/namespaces/{namespace}/tasks/{task_id}?queue={queue}"


async def _enqueue(
    request: Request,
    b: Broker,
    namespace: str,
    tasks: list[SubmitTask],
    keys: list[str | None],
    where: str,
) -> list[Submitted]:
    """Enqueue in one round trip per queue, keeping the caller's order."""
    by_queue: dict[str, list[tuple[int, TaskRequest]]] = defaultdict(list)
    for i, (task, key) in enumerate(zip(tasks, keys, strict=True)):
        try:
            by_queue[task.queue].append((i, to_request(task, key)))
        except PayloadTooLarge as e:
            loc = ["body", *([where, i] if where else []), "payload"]
            raise HTTPException(422, [{"loc": loc, "msg": str(e), "type": "value_error"}]) from e
    out: list[Submitted | None] = [None] * len(tasks)
    for queue, items in by_queue.items():
        type_ = items[0][1].type
        # A caller's `traceparent` header makes the tasks part of the caller's trace.
        with tracing.enqueue_span(
            namespace, queue, type_, len(items), headers=request.headers
        ) as tp:
            reqs = [dataclasses.replace(r, traceparent=tp) if tp else r for _, r in items]
            ids = await b.enqueue_many(namespace, queue, reqs)
        for (i, _), task_id in zip(items, ids, strict=True):
            out[i] = Submitted(
                id=task_id,
                namespace=namespace,
                queue=queue,
                url=_task_url(namespace, queue, task_id),
            )
    return [s for s in out if s is not None]


@router.post(
    "/namespaces/{namespace}/tasks",
    status_code=201,
    summary="Submit a task (RBAC: create tasks)",
    dependencies=[Depends(allowed("create", "tasks"))],
)
async def submit(
    request: Request,
    namespace: Namespace,
    task: Annotated[SubmitTask, Body()],
    b: BrokerDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=256,
            description="Tasks of one queue with the same key run once while it is held (24 h); "
            "a repeat returns the first task's id. Same as the body's idempotencyKey.",
        ),
    ] = None,
) -> Submitted:
    return (await _enqueue(request, b, namespace, [task], [idempotency_key], ""))[0]


@router.post(
    "/namespaces/{namespace}/tasks/batch",
    status_code=201,
    summary="Submit up to 1000 tasks in one request (RBAC: create tasks)",
    dependencies=[Depends(allowed("create", "tasks"))],
)
async def submit_batch(
    request: Request, namespace: Namespace, batch: SubmitBatch, b: BrokerDep
) -> SubmittedBatch:
    keys: list[str | None] = [None] * len(batch.tasks)
    return SubmittedBatch(tasks=await _enqueue(request, b, namespace, batch.tasks, keys, "tasks"))


async def _get(b: Broker, namespace: str, queue: str, task_id: str) -> TaskInfo:
    info = await b.get(namespace, queue, task_id)
    if info is None:
        raise HTTPException(404, f"no task {task_id} in queue {namespace}/{queue}")
    return info


@router.get(
    "/namespaces/{namespace}/tasks/{task_id}",
    summary="A task: state, result, error, attempts (RBAC: get tasks)",
    dependencies=[Depends(allowed("get", "tasks"))],
)
async def get_task(
    namespace: Namespace, task_id: TaskId, b: BrokerDep, queue: QueueParam = "default"
) -> TaskView:
    return TaskView.of(await _get(b, namespace, queue, task_id))


@router.get(
    "/namespaces/{namespace}/tasks/{task_id}/wait",
    summary="Long-poll until the task finishes or `timeout` passes (RBAC: get tasks)",
    dependencies=[Depends(allowed("get", "tasks"))],
)
async def wait_task(
    namespace: Namespace,
    task_id: TaskId,
    b: BrokerDep,
    queue: QueueParam = "default",
    timeout: Annotated[float, Query(gt=0, le=MAX_WAIT_SECONDS)] = 30.0,
) -> TaskView:
    """Returns the task as soon as it is finished (`finished: true`), or as it is after
    `timeout` seconds (`finished: false`: ask again)."""
    deadline = time.monotonic() + timeout
    pause = 0.02
    while True:
        info = await _get(b, namespace, queue, task_id)
        if info.state in TERMINAL or time.monotonic() >= deadline:
            return TaskView.of(info)
        await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.5, 0.5)


@router.post(
    "/namespaces/{namespace}/tasks/{task_id}/cancel",
    summary="Cancel a task: queued ones never run, a running one stops at its next heartbeat; "
    "for a Task object, sets its spec.cancel with your token (RBAC: update tasks)",
)
async def cancel_task(
    request: Request,
    namespace: Namespace,
    task_id: TaskId,
    who: CallerDep,
    b: BrokerDep,
    queue: QueueParam = "default",
) -> TaskView:
    await actor(request).cancel(who, bearer(request), namespace, queue, task_id)
    return TaskView.of(await _get(b, namespace, queue, task_id))


@router.post(
    "/namespaces/{namespace}/tasks/{task_id}/requeue",
    summary="Run a dead-lettered task again (RBAC: update tasks)",
)
async def requeue_task(
    request: Request,
    namespace: Namespace,
    task_id: TaskId,
    who: CallerDep,
    b: BrokerDep,
    queue: QueueParam = "default",
) -> TaskView:
    await actor(request).requeue(who, namespace, queue, task_id)
    return TaskView.of(await _get(b, namespace, queue, task_id))


@router.delete(
    "/namespaces/{namespace}/tasks/{task_id}",
    status_code=204,
    summary="Delete a task that has ended, with its data (RBAC: delete tasks)",
)
async def delete_task(
    request: Request,
    namespace: Namespace,
    task_id: TaskId,
    who: CallerDep,
    queue: QueueParam = "default",
) -> None:
    await actor(request).delete(who, namespace, queue, task_id)


@router.get(
    "/namespaces/{namespace}/queues",
    summary="Every queue of the namespace with its depth (RBAC: list taskqueues)",
    dependencies=[Depends(allowed("list", "taskqueues"))],
)
async def list_queues(namespace: Namespace, b: BrokerDep) -> list[QueueView]:
    inspector = Inspector(b)
    names = await inspector.queues_of(namespace)
    return [QueueView.of(await inspector.stats(namespace, q)) for q in names]


@router.get(
    "/namespaces/{namespace}/queues/{queue}",
    summary="A queue's depth: ready, active, delayed, dead, paused (RBAC: get taskqueues)",
    dependencies=[Depends(allowed("get", "taskqueues"))],
)
async def get_queue(namespace: Namespace, queue: Queue, b: BrokerDep) -> QueueView:
    return QueueView.of(await Inspector(b).stats(namespace, queue))


@router.post(
    "/namespaces/{namespace}/queues/{queue}/pause",
    summary="Stop workers claiming from the queue; running tasks finish. Where a TaskQueue "
    "declares the queue, its spec.paused is patched with your token (RBAC: update taskqueues)",
)
async def pause(
    request: Request, namespace: Namespace, queue: Queue, who: CallerDep, b: BrokerDep
) -> QueueView:
    await actor(request).set_paused(who, bearer(request), namespace, queue, True)
    return QueueView.of(await Inspector(b).stats(namespace, queue))


@router.post(
    "/namespaces/{namespace}/queues/{queue}/resume",
    summary="Let workers claim from the queue again (RBAC: update taskqueues)",
)
async def resume(
    request: Request, namespace: Namespace, queue: Queue, who: CallerDep, b: BrokerDep
) -> QueueView:
    await actor(request).set_paused(who, bearer(request), namespace, queue, False)
    return QueueView.of(await Inspector(b).stats(namespace, queue))


@router.get(
    "/namespaces/{namespace}/queues/{queue}/dead",
    summary="A page of the dead-letter queue, oldest first (RBAC: list tasks)",
    dependencies=[Depends(allowed("list", "tasks"))],
)
async def list_dead(
    namespace: Namespace,
    queue: Queue,
    b: BrokerDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> list[TaskView]:
    tasks = await Inspector(b).dead_tasks(namespace, queue, offset, limit)
    return [TaskView.of(t) for t in tasks]


@router.post(
    "/namespaces/{namespace}/queues/{queue}/dead/requeue",
    summary="Requeue dead tasks: the listed ids, or with all=true every one, optionally only "
    "of one type: those dead-lettered before the call (RBAC: update tasks)",
    dependencies=[Depends(allowed("update", "tasks"))],
)
async def requeue_dead(
    request: Request,
    namespace: Namespace,
    queue: Queue,
    who: CallerDep,
    b: BrokerDep,
    ids: Annotated[list[str] | None, Body(max_length=MAX_PAGE, embed=True)] = None,
    all: Annotated[bool, Body(embed=True)] = False,
    type: Annotated[str | None, Body(embed=True, pattern=TASK_TYPE_PATTERN, max_length=253)] = None,
) -> dict[str, Any]:
    if bool(ids) == all:
        raise HTTPException(
            422, [{"loc": ["body", "ids"], "msg": "give ids, or all=true", "type": "value_error"}]
        )
    if ids:
        return {"requeued": await b.requeue_dead(namespace, queue, ids)}
    return {"requeued": await actor(request).requeue_dead(who, namespace, queue, type)}


@router.delete(
    "/namespaces/{namespace}/queues/{queue}/dead",
    summary="Delete every dead task of the queue (RBAC: delete tasks)",
    dependencies=[Depends(allowed("delete", "tasks"))],
)
async def purge_dead(namespace: Namespace, queue: Queue, b: BrokerDep) -> dict[str, int]:
    return {"purged": await b.purge_dead(namespace, queue)}
