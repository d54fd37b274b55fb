"""The Workflow engine's decisions, as a pure function of the spec and what Redis holds.

`advance(spec, observed)` says which step items to enqueue now, which steps' `when`/`forEach`
the glue must decide first (it evaluates them over upstream results and records the answer),
and the workflow's and each step's phase. It imports nothing from kopf, kubernetes or redis and
keeps no state: the glue calls it again after every change, so an operator restart rebuilds
everything from Redis.

Rules:
- A step is ready once every dependency ended Succeeded or Skipped, not all of them Skipped.
  All dependencies Skipped → Skipped (UpstreamSkipped); one Failed or Cancelled → Skipped
  (UpstreamFailed). `when` false → Skipped (ConditionFalse).
- A forEach step is Failed once one item is dead-lettered, Succeeded once all items are.
- failFast: after a main step failed nothing new starts (steps never started end Skipped,
  reason FailFast); `continue`: everything not downstream of the failure runs.
- finally steps start once every main step ended, whatever happened (not after a cancel).
- parallelism bounds the items enqueued and not ended, across the whole workflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from taskorch.api.workflow import (
    TERMINAL_STEP_PHASES,
    OnFailure,
    StepPhase,
    WorkflowPhase,
    WorkflowSpec,
    WorkflowStep,
)
from taskorch.queue.model import State

MAX_FAILURES_SHOWN = 5


class ItemRef(NamedTuple):
    """One task of a step: `item` is None for a plain step, the item's position for forEach."""

    step: str
    item: int | None


@dataclass(frozen=True)
class StepState:
    """What the glue knows of a step: its recorded decisions and its items' Redis states."""

    condition: bool | None = None  # `when` as decided; None: not decided (or no `when`)
    error: str | None = None  # why the step could not be started (a bad reference or CEL)
    items: int | None = None  # forEach: how many items, once expanded
    states: Mapping[int, State] = field(default_factory=dict)  # item index (0 if plain) → state


@dataclass(frozen=True)
class StepView:
    name: str
    phase: StepPhase
    reason: str | None = None
    items: int | None = None  # forEach only
    counts: Mapping[str, int] | None = None  # forEach only: items per phase
    failed: tuple[int, ...] = ()  # the first failed item indices (0 for a plain step)


@dataclass(frozen=True)
class Advance:
    phase: WorkflowPhase
    reason: str
    progress: str
    steps: list[StepView]
    evaluate: list[str]  # steps whose `when` / `forEach` must be decided before they can start
    enqueue: list[ItemRef]  # in the order to enqueue them


def find_cycle(steps: Sequence[WorkflowStep]) -> list[str] | None:
    """A dependency cycle as a path that ends where it starts (`a → b → a`), or None."""
    deps = {s.name: list(s.depends_on or []) for s in steps}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> list[str] | None:
        if name in visiting:
            return [*visiting[visiting.index(name) :], name]
        if name in done or name not in deps:
            return None
        visiting.append(name)
        for dep in deps[name]:
            if cycle := visit(dep):
                return cycle
        visiting.pop()
        done.add(name)
        return None

    for s in steps:
        if cycle := visit(s.name):
            return cycle
    return None


def _item_phase(state: State) -> StepPhase:
    if state is State.succeeded:
        return StepPhase.Succeeded
    if state is State.dead:
        return StepPhase.Failed
    if state is State.cancelled:
        return StepPhase.Cancelled
    return StepPhase.Running


class _Group:
    """Phases of one group of steps (the main steps, or finally), in dependency order."""

    def __init__(
        self,
        steps: Sequence[WorkflowStep],
        observed: Mapping[str, StepState],
        stop_new: str | None,
    ) -> None:
        """`stop_new`: nothing new starts, and a step that has not started ends Skipped with
        this reason (FailFast, Cancelled, DeadlineExceeded)."""
        self.views: dict[str, StepView] = {}
        self.evaluate: list[str] = []
        self.startable: list[WorkflowStep] = []  # may get new items enqueued
        by_name = {s.name: s for s in steps}
        for step in _dependency_order(steps):
            obs = observed.get(step.name, StepState())
            self.views[step.name] = self._view(step, obs, by_name, stop_new)

    def _view(
        self,
        step: WorkflowStep,
        obs: StepState,
        by_name: Mapping[str, WorkflowStep],
        stop_new: str | None,
    ) -> StepView:
        if obs.states:
            return self._started(step, obs, stop_new)
        if obs.error is not None:
            return StepView(step.name, StepPhase.Failed, "InvalidReference", failed=(0,))
        deps = [self.views[d].phase for d in step.depends_on or [] if d in by_name]
        if any(p in (StepPhase.Failed, StepPhase.Cancelled) for p in deps):
            return StepView(step.name, StepPhase.Skipped, "UpstreamFailed")
        if deps and all(p is StepPhase.Skipped for p in deps):
            return StepView(step.name, StepPhase.Skipped, "UpstreamSkipped")
        if any(p not in TERMINAL_STEP_PHASES for p in deps):
            return StepView(step.name, StepPhase.Pending, "WaitingForDependencies")
        if stop_new:
            return StepView(step.name, StepPhase.Skipped, stop_new)
        if step.when and obs.condition is None:
            self.evaluate.append(step.name)
            return StepView(step.name, StepPhase.Pending, "Evaluating")
        if step.when and obs.condition is False:
            return StepView(step.name, StepPhase.Skipped, "ConditionFalse")
        if step.for_each is not None and obs.items is None:
            self.evaluate.append(step.name)
            return StepView(step.name, StepPhase.Pending, "Evaluating")
        if obs.items == 0:
            return StepView(step.name, StepPhase.Succeeded, "NoItems", 0, {})
        self.startable.append(step)
        return StepView(step.name, StepPhase.Pending, "Ready", obs.items)

    def _started(self, step: WorkflowStep, obs: StepState, stop_new: str | None) -> StepView:
        total = obs.items if step.for_each is not None and obs.items is not None else 1
        phases = {i: _item_phase(s) for i, s in obs.states.items()}
        failed = tuple(sorted(i for i, p in phases.items() if p is StepPhase.Failed))
        counts: dict[str, int] = {}
        for p in phases.values():
            counts[p.value] = counts.get(p.value, 0) + 1
        if len(phases) < total:
            counts[StepPhase.Pending.value] = total - len(phases)
        fan_out = step.for_each is not None
        if failed:
            phase, reason = StepPhase.Failed, "ItemFailed" if step.for_each else "TaskFailed"
        elif any(p is StepPhase.Cancelled for p in phases.values()):
            phase, reason = StepPhase.Cancelled, "Cancelled"
        elif counts.get(StepPhase.Succeeded.value, 0) == total:
            phase, reason = StepPhase.Succeeded, "Succeeded"
        else:
            phase, reason = StepPhase.Running, "Running"
            if len(phases) < total and not stop_new:
                self.startable.append(step)
        return StepView(
            step.name,
            phase,
            reason,
            items=total if fan_out else None,
            counts=counts if fan_out else None,
            failed=failed[:MAX_FAILURES_SHOWN],
        )

    def ended(self) -> bool:
        return all(v.phase in TERMINAL_STEP_PHASES for v in self.views.values())

    def failed(self) -> str | None:
        return next(
            (
                n
                for n, v in self.views.items()
                if v.phase in (StepPhase.Failed, StepPhase.Cancelled)
            ),
            None,
        )


def _dependency_order(steps: Sequence[WorkflowStep]) -> list[WorkflowStep]:
    """Dependencies first, otherwise in the spec's order (Kahn's algorithm, stable). A step in a
    cycle is left out: the operator refuses such a spec before it gets here."""
    names = {s.name for s in steps}
    placed: set[str] = set()
    out: list[WorkflowStep] = []
    progress = True
    while progress:
        progress = False
        for s in steps:
            if s.name not in placed and all(
                d in placed or d not in names for d in s.depends_on or []
            ):
                out.append(s)
                placed.add(s.name)
                progress = True
    return out


def _in_flight(observed: Mapping[str, StepState]) -> int:
    return sum(
        1
        for obs in observed.values()
        for s in obs.states.values()
        if _item_phase(s) is StepPhase.Running
    )


def advance(
    spec: WorkflowSpec, observed: Mapping[str, StepState], *, deadline_passed: bool = False
) -> Advance:
    """`deadline_passed` stops the workflow as a cancel does (nothing new starts, finally does
    not run; the glue cancels what runs), ending Failed with reason DeadlineExceeded."""
    stop_reason = "Cancelled" if spec.cancel else "DeadlineExceeded" if deadline_passed else None
    main = _Group(spec.steps, observed, stop_new=stop_reason)
    if stop_reason is None and spec.on_failure is OnFailure.failFast and main.failed():
        main = _Group(spec.steps, observed, stop_new="FailFast")  # nothing new may start
    final_steps = spec.finally_ or []
    main_ended = main.ended()
    stopped = stop_reason is not None
    # finally starts once the steps ended, unless stopped (it may have run before the stop)
    final = _Group(final_steps, observed, stop_new=stop_reason) if main_ended else None
    views = list(main.views.values())
    if final is not None:
        views += list(final.views.values())
    else:
        views += [StepView(s.name, StepPhase.Pending, "WaitingForSteps") for s in final_steps]

    hold = spec.suspend or stopped
    evaluate = [] if hold else main.evaluate + (final.evaluate if final else [])
    enqueue: list[ItemRef] = []
    if not hold:
        room = None if spec.parallelism is None else spec.parallelism - _in_flight(observed)
        startable = main.startable + (final.startable if final else [])
        for step in startable:
            obs = observed.get(step.name, StepState())
            if step.for_each is None:
                candidates = [ItemRef(step.name, None)] if 0 not in obs.states else []
            else:
                total = obs.items or 0
                candidates = [ItemRef(step.name, i) for i in range(total) if i not in obs.states]
            for ref in candidates:
                if room is not None and room <= 0:
                    break
                enqueue.append(ref)
                if room is not None:
                    room -= 1

    ended = sum(1 for v in views if v.phase in TERMINAL_STEP_PHASES)
    progress = f"{ended}/{len(views)}"
    finally_ended = final.ended() if final is not None else not final_steps
    failed_step = main.failed() or (final.failed() if final else None)
    in_flight = _in_flight(observed) > 0
    interrupted = stopped and any(
        v.reason == stop_reason or v.phase is StepPhase.Cancelled for v in views
    )
    if stopped and (in_flight or interrupted):
        if in_flight:
            phase, reason = WorkflowPhase.Running, "Cancelling"
        elif spec.cancel:
            phase, reason = WorkflowPhase.Cancelled, "Cancelled"
        else:
            phase, reason = WorkflowPhase.Failed, "DeadlineExceeded"
    elif main_ended and finally_ended:  # ended before any cancel or deadline: that stands
        if failed_step:
            phase, reason = WorkflowPhase.Failed, "StepFailed"
        else:
            phase, reason = WorkflowPhase.Succeeded, "Succeeded"
    elif spec.suspend:
        phase, reason = WorkflowPhase.Suspended, "Suspended"
    else:
        phase, reason = WorkflowPhase.Running, "Running"
    return Advance(phase, reason, progress, views, evaluate, enqueue)
