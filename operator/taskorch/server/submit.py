"""A task submitted over HTTP: the Task CRD's own spec model (so what `kubectl apply` refuses,
the API refuses, naming the same field), minus what only the operator can do for a CR."""

from __future__ import annotations

import time

from pydantic import Field, model_validator

from taskorch.api.base import ApiModel, duration_seconds
from taskorch.api.task import TaskSpec, priority_level, runnable
from taskorch.queue.model import MAX_PAYLOAD_BYTES, TaskRequest, dumps, size_in_bytes

MAX_BATCH = 1000

# Fields of a Task CR that need the operator: resolving Secrets, watching the object.
CR_ONLY = {
    "payload_from": "payloadFrom is resolved from Secrets by the operator",
    "ttl_seconds_after_finished": "ttlSecondsAfterFinished deletes a Task object",
    "suspend": "suspend holds a Task object",
    "cancel": "cancel is POST .../tasks/{id}/cancel here",
    "container": "a container task's Jobs are owned by its Task object",
}


class SubmitTask(TaskSpec):
    """The spec of a Task, as in `kubectl explain task.spec`, sent as JSON."""

    model_config = TaskSpec.model_config | {"extra": "forbid", "json_schema_extra": None}

    @model_validator(mode="after")
    def _no_cr_only_fields(self) -> SubmitTask:
        for name in self.model_fields_set & CR_ONLY.keys():
            raise ValueError(f"{CR_ONLY[name]}: create a Task object with kubectl for it")
        if self.run_at is not None and self.delay is not None:  # the CRD's CEL rule
            raise ValueError("set at most one of runAt and delay")
        return self


class SubmitBatch(ApiModel):
    model_config = ApiModel.model_config | {"extra": "forbid"}

    tasks: list[SubmitTask] = Field(min_length=1, max_length=MAX_BATCH)


class Submitted(ApiModel):
    id: str
    namespace: str
    queue: str
    url: str = Field(description="Where to GET the task.")


class SubmittedBatch(ApiModel):
    tasks: list[Submitted]


class PayloadTooLarge(ValueError):
    pass


def to_request(task: SubmitTask, idempotency_key: str | None = None) -> TaskRequest:
    """The queue's record of a submitted task; PayloadTooLarge past the CRD's cap."""
    type_, payload = runnable(task, task.payload)
    size = size_in_bytes(dumps(payload))
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"payload is {size} bytes as JSON, over {MAX_PAYLOAD_BYTES}")
    return TaskRequest(
        type=type_,
        payload=payload,
        priority=priority_level(task.priority),
        retry=task.retry.model_dump(by_alias=True, exclude_none=True) if task.retry else None,
        timeout=duration_seconds(task.timeout) if task.timeout else None,
        run_at=task.run_at.timestamp() if task.run_at else None,
        delay=duration_seconds(task.delay) if task.delay else None,
        deadline=time.time() + duration_seconds(task.deadline) if task.deadline else None,
        idempotency_key=idempotency_key or task.idempotency_key,
        concurrency_key=task.concurrency_key or "",
        max_concurrent=task.max_concurrent,
    )
