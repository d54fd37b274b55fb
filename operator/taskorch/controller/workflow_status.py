"""Workflow status from the engine's view and the steps' Redis records: a pure function, built
from the WorkflowStatus model, bounded whatever the fan-out (counts, the first few failures)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskorch.api.base import format_duration
from taskorch.api.workflow import (
    TERMINAL_WORKFLOW_PHASES,
    StepFailure,
    StepPhase,
    StepSummary,
    WorkflowPhase,
    WorkflowSpec,
    WorkflowStatus,
)
from taskorch.controller.dag import Advance, StepView
from taskorch.controller.health import with_health
from taskorch.controller.status import RESULT_INLINE_BYTES, condition, timestamp
from taskorch.queue.model import TaskInfo, dumps, size_in_bytes

Items = Mapping[str, Mapping[int, TaskInfo]]  # step -> item index (0 if plain) -> record


def _error_text(info: TaskInfo | None) -> tuple[str, str]:
    err = (info.error if info else None) or {}
    return str(
        err.get("reason") or "Error"
    ), f"{err.get('type', 'Error')}: {err.get('message', '')}"


def _summary(
    view: StepView, records: Mapping[int, TaskInfo], errors: Mapping[str, str]
) -> StepSummary:
    started = [r.started_ms for r in records.values() if r.started_ms]
    finished = [r.finished_ms for r in records.values() if r.finished_ms]
    ended = view.phase in (StepPhase.Succeeded, StepPhase.Failed, StepPhase.Cancelled)
    failures = []
    for index in view.failed:
        if view.name in errors:
            failures.append(
                StepFailure(reason="InvalidReference", message=errors[view.name][:1024])
            )
            continue
        reason, message = _error_text(records.get(index))
        failures.append(
            StepFailure(
                index=index if view.items is not None else None,
                reason=reason,
                message=message[:1024],
            )
        )
    plain = records.get(0) if view.items is None else None
    return StepSummary(
        name=view.name,
        phase=view.phase,
        reason=view.reason,
        message=failures[0].message if failures else None,
        attempts=plain.attempt if plain else None,
        start_time=timestamp(min(started)) if started else None,
        completion_time=timestamp(max(finished)) if ended and finished else None,
        items=view.items,
        counts=dict(view.counts) if view.counts is not None else None,
        failures=failures or None,
    )


def step_result(spec_step_for_each: bool, records: Mapping[int, TaskInfo], total: int) -> Any:
    """A step's result: its task's, or a forEach step's items' results in order."""
    if not spec_step_for_each:
        return records[0].result if 0 in records else None
    return [records[i].result if i in records else None for i in range(total)]


def workflow_status(
    spec: WorkflowSpec,
    adv: Advance,
    items: Items,
    results: Mapping[str, Any],
    errors: Mapping[str, str],
    generation: int | None,
    created_ms: int,
    now_ms: int,
) -> dict[str, Any]:
    steps = [_summary(v, items.get(v.name, {}), errors) for v in adv.steps]
    started = [s.start_time for s in steps if s.start_time]
    terminal = adv.phase in TERMINAL_WORKFLOW_PHASES
    finished = [r.finished_ms for recs in items.values() for r in recs.values() if r.finished_ms]
    completion_ms = (max(finished) if finished else now_ms) if terminal else None
    if adv.phase is WorkflowPhase.Succeeded:
        cond = condition(
            "Succeeded", "True", "Succeeded", "every step succeeded", completion_ms, generation
        )
    elif terminal:
        failed = next(
            (s for s in steps if s.phase in (StepPhase.Failed, StepPhase.Cancelled)), None
        )
        if adv.reason == "DeadlineExceeded":
            message = f"the deadline ({spec.deadline}) passed with {adv.progress} steps ended"
        elif failed:
            message = f"step {failed.name} {failed.phase.value.lower()}: "
            message += failed.message or failed.reason or ""
        else:
            message = adv.reason
        cond = condition("Succeeded", "False", adv.reason, message, completion_ms, generation)
    else:
        cond = condition(
            "Succeeded",
            "Unknown",
            adv.reason,
            f"{adv.progress} steps ended",
            created_ms,
            generation,
        )
    depended = {d for s in spec.steps for d in s.depends_on or []}
    leaves = {
        s.name: results[s.name] for s in spec.steps if s.name not in depended and s.name in results
    }
    result = leaves if leaves and size_in_bytes(dumps(leaves)) <= RESULT_INLINE_BYTES else None
    status = WorkflowStatus(
        phase=adv.phase,
        progress=adv.progress,
        conditions=with_health([cond]),
        observed_generation=generation,
        start_time=min(started) if started else None,
        completion_time=timestamp(completion_ms),
        duration=format_duration((completion_ms - created_ms) / 1000) if completion_ms else None,
        steps=steps,
        result=result if adv.phase is WorkflowPhase.Succeeded else None,
    )
    return status.model_dump(by_alias=True, mode="json", exclude_none=True)


def invalid_status(
    reason: str, message: str, generation: int | None, now_ms: int
) -> dict[str, Any]:
    """A Workflow the operator refuses before running anything."""
    status = WorkflowStatus(
        phase=WorkflowPhase.Failed,
        observed_generation=generation,
        completion_time=timestamp(now_ms),
        conditions=with_health(
            [condition("Succeeded", "False", reason, message, now_ms, generation)]
        ),
    )
    return status.model_dump(by_alias=True, mode="json", exclude_none=True)
