"""Task status, built from the TaskStatus model: from the task's Redis record (a pure function,
so a rewrite is idempotent) or for the Tasks that never reach the queue.

Times come from the record, never from `now`, so writing the same record twice writes the same
status (conditions keep their lastTransitionTime). Built from the model, never as hand-written
camelCase dicts: the API server silently drops a status field it does not know.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from taskorch.api.base import Condition, format_duration
from taskorch.api.reasons import Reason
from taskorch.api.task import AttemptRecord, TaskError, TaskPhase, TaskStatus
from taskorch.controller.health import with_health
from taskorch.queue.model import State, TaskInfo, dumps, size_in_bytes

RESULT_INLINE_BYTES = 4096
TRACEBACK_TAIL = 800

PHASES = {
    State.scheduled: TaskPhase.Scheduled,
    State.queued: TaskPhase.Queued,
    State.active: TaskPhase.Running,
    State.retrying: TaskPhase.Retrying,
    State.succeeded: TaskPhase.Succeeded,
    State.dead: TaskPhase.DeadLettered,
    State.cancelled: TaskPhase.Cancelled,
}


def timestamp(ms: int | float | None) -> datetime | None:
    """A Redis time (epoch ms) at the second, as Kubernetes shows times."""
    if ms is None:
        return None
    return datetime.fromtimestamp(int(ms // 1000), UTC)


def epoch_seconds(ts: str) -> float:
    """An RFC 3339 timestamp as Kubernetes writes it, in seconds since the epoch."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def condition(
    type_: str, status: str, reason: str, message: str, at_ms: int | None, generation: int | None
) -> Condition:
    return Condition.model_validate(
        {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message[:1024],
            "last_transition_time": timestamp(at_ms) or timestamp(0),
            "observed_generation": generation,
        }
    )


def held_condition(
    prior: list[dict[str, Any]] | None,
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    at_ms: int,
) -> Condition:
    """A condition whose lastTransitionTime moves only when its status or reason changes (the
    `prior` conditions as last written)."""
    previous = next((c for c in prior or [] if c.get("type") == type_), None)
    if previous and (previous.get("status"), previous.get("reason")) == (status, reason):
        at_ms = int(epoch_seconds(previous["lastTransitionTime"]) * 1000)
    return condition(type_, status, reason, message, at_ms, generation)


def dump(status: TaskStatus) -> dict[str, Any]:
    """The status subresource as the API server gets it, with the GitOps health conditions."""
    if status.conditions:
        status = status.model_copy(update={"conditions": with_health(status.conditions)})
    return status.model_dump(by_alias=True, mode="json", exclude_none=True)


def _short_error(err: dict[str, Any] | None) -> str:
    if not err:
        return ""
    return f"{err.get('type', 'Error')}: {err.get('message', '')}"[:300]


def _conditions(info: TaskInfo, generation: int | None) -> list[Condition]:
    err = info.error
    at = info.finished_ms
    if info.state is State.succeeded:
        return [
            condition("Succeeded", "True", Reason.Succeeded, "the handler returned", at, generation)
        ]
    if info.state is State.dead:
        reason = (err or {}).get("reason") or "Error"
        msg = f"dead-lettered after {info.attempt} attempt(s): {_short_error(err)}"
        return [
            condition("Succeeded", "False", reason, msg, at, generation),
            condition("DeadLettered", "True", reason, msg, at, generation),
        ]
    if info.state is State.cancelled:
        return [condition("Succeeded", "False", Reason.Cancelled, "cancelled", at, generation)]
    phase = PHASES[info.state]
    return [
        condition(
            "Succeeded",
            "Unknown",
            phase.value,
            f"the task is {phase.value.lower()}",
            info.created_ms,
            generation,
        )
    ]


def task_status(info: TaskInfo, generation: int | None) -> dict[str, Any]:
    """The whole status subresource of a task in Redis."""
    err = info.error
    result: Any = None
    result_ref = None
    if info.state is State.succeeded and info.result is not None:
        if size_in_bytes(dumps(info.result)) <= RESULT_INLINE_BYTES:
            result = info.result
        else:
            result_ref = f"redis:{info.namespace}/{info.queue}/{info.id}"
    finished = info.state in (State.succeeded, State.dead, State.cancelled)
    duration = None
    if finished and info.finished_ms and info.created_ms:
        duration = format_duration((info.finished_ms - info.created_ms) / 1000)
    status = TaskStatus(
        phase=PHASES[info.state],
        conditions=_conditions(info, generation),
        observed_generation=generation,
        task_id=info.id,
        attempts=info.attempt,
        start_time=timestamp(info.started_ms),
        completion_time=timestamp(info.finished_ms) if finished else None,
        duration=duration,
        worker=info.owner or (info.history[-1].get("worker") if info.history else None),
        last_error=TaskError(
            type=err.get("type", "Error"),
            reason=err.get("reason"),
            message=str(err.get("message", ""))[:1024],
            traceback=(err.get("traceback") or "")[-TRACEBACK_TAIL:] or None,
        )
        if err
        else None,
        result=result,
        result_ref=result_ref,
        history=[_history_entry(h) for h in info.history] or None,
        next_retry_at=timestamp(info.next_retry_ms) if info.state is State.retrying else None,
    )
    return dump(status)


def _history_entry(h: dict[str, Any]) -> AttemptRecord:
    return AttemptRecord(
        attempt=h.get("attempt") or 0,
        worker=h.get("worker"),
        start_time=timestamp(h.get("startTime")),
        finish_time=timestamp(h.get("finishTime")),
        outcome=h.get("outcome", "Unknown"),
        error=h.get("error"),
    )


def failed_status(reason: str, message: str, generation: int | None, now_ms: int) -> dict[str, Any]:
    """A Task the operator refused before it reached the queue."""
    return dump(
        TaskStatus(
            phase=TaskPhase.Failed,
            observed_generation=generation,
            conditions=[condition("Succeeded", "False", reason, message, now_ms, generation)],
        )
    )


def pending_status(
    reason: str, message: str, generation: int | None, now_ms: int, type_: str = "Succeeded"
) -> dict[str, Any]:
    """A Task waiting before the queue: suspended, a payloadFrom source missing, or (with
    type_ QueueUnavailable, beside Succeeded=Unknown) Redis unreachable."""
    conditions = [condition("Succeeded", "Unknown", reason, message, now_ms, generation)]
    if type_ == "QueueUnavailable":
        conditions.append(condition(type_, "True", reason, message, now_ms, generation))
    return dump(
        TaskStatus(phase=TaskPhase.Pending, observed_generation=generation, conditions=conditions)
    )


def cancelled_status(generation: int | None, now_ms: int) -> dict[str, Any]:
    """A Task cancelled before it reached the queue (suspended, or still Pending)."""
    return dump(
        TaskStatus(
            phase=TaskPhase.Cancelled,
            observed_generation=generation,
            attempts=0,
            completion_time=timestamp(now_ms),
            conditions=[
                condition(
                    "Succeeded",
                    "False",
                    Reason.Cancelled,
                    "cancelled before it was queued",
                    now_ms,
                    generation,
                )
            ],
        )
    )


def duplicate_status(
    key: str, holder_id: str, holder: str, generation: int | None, now_ms: int
) -> dict[str, Any]:
    """A Task whose idempotencyKey another task holds: it never runs; `holder` names that task
    (its Task's name, or the id of an SDK task) and taskId points at it."""
    message = f"idempotencyKey {key!r} is held by {holder}: this Task does not run"
    return dump(
        TaskStatus(
            phase=TaskPhase.Skipped,
            observed_generation=generation,
            task_id=holder_id,
            attempts=0,
            completion_time=timestamp(now_ms),
            conditions=[
                condition("Succeeded", "False", Reason.Duplicate, message, now_ms, generation)
            ],
        )
    )
