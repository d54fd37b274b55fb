"""Task status from the task's Redis record: a pure function, so a rewrite is idempotent.

Times come from the record, never from `now`, so writing the same record twice writes the same
status (conditions keep their lastTransitionTime).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from taskorch.api.base import format_duration
from taskorch.api.task import TaskPhase
from taskorch.queue.model import State, TaskInfo

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


def rfc3339(ms: int | float | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch_seconds(ts: str) -> float:
    """An RFC 3339 timestamp as Kubernetes writes it, in seconds since the epoch."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def condition(
    type_: str, status: str, reason: str, message: str, at_ms: int | None, generation: int | None
) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": rfc3339(at_ms) or rfc3339(0),
        "observedGeneration": generation,
    }


def _short_error(err: dict[str, Any] | None) -> str:
    if not err:
        return ""
    return f"{err.get('type', 'Error')}: {err.get('message', '')}"[:300]


def task_status(info: TaskInfo, generation: int | None) -> dict[str, Any]:
    """The whole status subresource for a task; keys set to None are removed by a merge patch."""
    phase = PHASES[info.state]
    err = info.error
    reason = (err or {}).get("reason") or "Error"
    conditions: list[dict[str, Any]]
    if info.state is State.succeeded:
        conditions = [
            condition(
                "Succeeded",
                "True",
                "Succeeded",
                "the handler returned",
                info.finished_ms,
                generation,
            )
        ]
    elif info.state is State.dead:
        msg = f"dead-lettered after {info.attempt} attempt(s): {_short_error(err)}"
        conditions = [
            condition("Succeeded", "False", reason, msg, info.finished_ms, generation),
            condition("DeadLettered", "True", reason, msg, info.finished_ms, generation),
        ]
    elif info.state is State.cancelled:
        conditions = [
            condition("Succeeded", "False", "Cancelled", "cancelled", info.finished_ms, generation)
        ]
    else:
        conditions = [
            condition(
                "Succeeded",
                "Unknown",
                phase.value,
                f"the task is {phase.value.lower()}",
                info.created_ms,
                generation,
            )
        ]
    result: Any = None
    result_ref = None
    if info.state is State.succeeded and info.result is not None:
        if len(json.dumps(info.result)) <= RESULT_INLINE_BYTES:
            result = info.result
        else:
            result_ref = f"redis:{info.namespace}/{info.queue}/{info.id}"
    worker = info.owner or (info.history[-1].get("worker") if info.history else None)
    duration = None
    if info.finished_ms and info.created_ms:
        duration = format_duration((info.finished_ms - info.created_ms) / 1000)
    return {
        "phase": phase.value,
        "conditions": conditions,
        "observedGeneration": generation,
        "taskId": info.id,
        "attempts": info.attempt,
        "startTime": rfc3339(info.started_ms),
        "completionTime": rfc3339(info.finished_ms)
        if info.state in (State.succeeded, State.dead, State.cancelled)
        else None,
        "duration": duration,
        "worker": worker,
        "lastError": {
            "type": err.get("type", "Error"),
            "message": str(err.get("message", ""))[:1024],
            "traceback": (err.get("traceback") or "")[-TRACEBACK_TAIL:] or None,
        }
        if err
        else None,
        "result": result,
        "resultRef": result_ref,
        "history": [_history_entry(h) for h in info.history] or None,
        "nextRetryAt": rfc3339(info.next_retry_ms) if info.state is State.retrying else None,
    }


def _history_entry(h: dict[str, Any]) -> dict[str, Any]:
    return {
        "attempt": h.get("attempt"),
        "worker": h.get("worker"),
        "startTime": rfc3339(h.get("startTime")),
        "finishTime": rfc3339(h.get("finishTime")),
        "outcome": h.get("outcome", "Unknown"),
        "error": h.get("error"),
    }


def failed_status(reason: str, message: str, generation: int | None, now_ms: int) -> dict[str, Any]:
    """A Task the operator refused before it reached the queue."""
    return {
        "phase": TaskPhase.Failed.value,
        "observedGeneration": generation,
        "conditions": [condition("Succeeded", "False", reason, message, now_ms, generation)],
    }
