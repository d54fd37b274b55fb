"""What the HTTP API and the dashboard show: tasks and queues as camelCase models, built from
the queue's read model. Pure: no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import Field, JsonValue

from taskorch.api.base import ApiModel
from taskorch.queue.inspect import QueueStats
from taskorch.queue.model import TERMINAL, State, TaskInfo

REDACTED = "<redacted>"


def _time(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


def redacted(payload: Any, fields: tuple[str, ...]) -> Any:
    """The payload with the fields resolved from Secrets hidden."""
    if not fields or not isinstance(payload, dict):
        return payload
    return {k: REDACTED if k in fields else v for k, v in payload.items()}


class TaskView(ApiModel):
    id: str
    namespace: str
    queue: str
    type: str
    state: State
    finished: bool = Field(description="True once the task succeeded, died or was cancelled.")
    attempt: int = Field(description="Attempts started so far.")
    failures: int
    payload: JsonValue = Field(description="Fields resolved from Secrets read <redacted>.")
    result: JsonValue = None
    error: dict[str, JsonValue] | None = None
    history: list[dict[str, JsonValue]] = Field(default_factory=list)
    progress: JsonValue = None
    worker: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    next_retry_at: datetime | None = None
    task_name: str | None = Field(default=None, description="The Task CR, for CR-backed tasks.")
    workflow: str | None = Field(default=None, description="name/uid of its Workflow, if a step.")

    @classmethod
    def of(cls, info: TaskInfo) -> TaskView:
        return cls(
            id=info.id,
            namespace=info.namespace,
            queue=info.queue,
            type=info.type,
            state=info.state,
            finished=info.state in TERMINAL,
            attempt=info.attempt,
            failures=info.failures,
            payload=redacted(info.payload, info.redact),
            result=info.result,
            error=info.error,
            history=info.history,
            progress=info.progress,
            worker=info.owner or None,
            created_at=_time(info.created_ms),
            started_at=_time(info.started_ms),
            finished_at=_time(info.finished_ms),
            next_retry_at=_time(info.next_retry_ms),
            task_name=info.cr_name or None,
            workflow=info.workflow or None,
        )


class QueueView(ApiModel):
    namespace: str
    queue: str
    ready: int = Field(description="Waiting to be claimed.")
    active: int = Field(description="Running, leased by a worker.")
    delayed: int = Field(description="Waiting for runAt, a retry backoff or a hand-back delay.")
    dead: int = Field(description="In the dead-letter queue.")
    paused: bool
    oldest_ready_age_seconds: float | None = None
    finished: int = Field(description="Tasks that ever ended here (for throughput).")

    @classmethod
    def of(cls, s: QueueStats) -> QueueView:
        return cls(
            namespace=s.namespace,
            queue=s.queue,
            ready=s.ready,
            active=s.active,
            delayed=s.delayed,
            dead=s.dead,
            paused=s.paused,
            oldest_ready_age_seconds=s.oldest_ready_age_s,
            finished=s.finished,
        )
