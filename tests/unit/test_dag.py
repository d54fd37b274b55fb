"""The Workflow engine's decisions and payload references, by table (no server)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from taskorch.api.workflow import StepPhase, WorkflowPhase, WorkflowSpec
from taskorch.controller.dag import ItemRef, StepState, advance, find_cycle
from taskorch.controller.templating import MissingReference, referenced_steps, render
from taskorch.queue.model import State

OK, DEAD, RUNNING, QUEUED = State.succeeded, State.dead, State.active, State.queued


def step(name: str, *deps: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "t", "dependsOn": list(deps), **extra}


def wf(*steps: dict[str, Any], **spec: Any) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"steps": list(steps), **spec})


def plain(**states: State) -> dict[str, StepState]:
    return {name: StepState(states={0: state}) for name, state in states.items()}


def phases(spec: WorkflowSpec, observed: dict[str, StepState]) -> dict[str, str]:
    return {v.name: f"{v.phase.value}/{v.reason}" for v in advance(spec, observed).steps}


PIPELINE = wf(step("download"), step("resize", "download"), step("upload", "resize"))
DIAMOND = wf(step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c"))


@pytest.mark.parametrize(
    ("spec", "observed", "enqueue", "phase", "progress"),
    [
        (PIPELINE, {}, [ItemRef("download", None)], WorkflowPhase.Running, "0/3"),
        (PIPELINE, plain(download=RUNNING), [], WorkflowPhase.Running, "0/3"),
        (PIPELINE, plain(download=OK), [ItemRef("resize", None)], WorkflowPhase.Running, "1/3"),
        (PIPELINE, plain(download=OK, resize=OK, upload=OK), [], WorkflowPhase.Succeeded, "3/3"),
        (
            DIAMOND,
            plain(a=OK),
            [ItemRef("b", None), ItemRef("c", None)],
            WorkflowPhase.Running,
            "1/4",
        ),
        (DIAMOND, plain(a=OK, b=OK, c=RUNNING), [], WorkflowPhase.Running, "2/4"),
        (DIAMOND, plain(a=OK, b=OK, c=OK), [ItemRef("d", None)], WorkflowPhase.Running, "3/4"),
    ],
    ids=["start", "first-running", "second", "done", "diamond-fans", "diamond-waits", "fan-in"],
)
def test_dependencies_order_the_steps(
    spec: WorkflowSpec,
    observed: dict[str, StepState],
    enqueue: list[ItemRef],
    phase: WorkflowPhase,
    progress: str,
) -> None:
    result = advance(spec, observed)
    assert (result.enqueue, result.phase, result.progress) == (enqueue, phase, progress)


def test_fan_out_respects_parallelism_and_fan_in_waits_for_every_item() -> None:
    spec = wf(step("items", forEach=list(range(100))), step("sum", "items"), parallelism=10)
    assert advance(spec, {}).evaluate == ["items"]  # forEach decided by the glue first
    expanded = {"items": StepState(items=100)}
    assert advance(spec, expanded).enqueue == [ItemRef("items", i) for i in range(10)]
    states = {i: RUNNING for i in range(10)}
    assert advance(spec, {"items": StepState(items=100, states=states)}).enqueue == []
    states = {i: OK for i in range(95)} | {i: RUNNING for i in range(95, 100)}
    result = advance(spec, {"items": StepState(items=100, states=states)})
    assert result.enqueue == []
    [items, fan_in] = result.steps
    assert items.phase is StepPhase.Running and items.counts == {"Succeeded": 95, "Running": 5}
    assert (fan_in.phase, fan_in.reason) == (StepPhase.Pending, "WaitingForDependencies")
    done = {"items": StepState(items=100, states={i: OK for i in range(100)})}
    assert advance(spec, done).enqueue == [ItemRef("sum", None)]


def test_a_failed_item_fails_the_fan_out_and_names_the_first_failures() -> None:
    spec = wf(step("items", forEach="steps.list.result"), on_failure="continue")
    states = {i: (DEAD if i % 10 == 3 else OK) for i in range(100)}
    [view] = advance(spec, {"items": StepState(items=100, states=states)}).steps
    assert view.phase is StepPhase.Failed and view.failed == (3, 13, 23, 33, 43)
    assert advance(spec, {"items": StepState(items=0)}).phase is WorkflowPhase.Succeeded


def test_when_false_skips_the_step_and_what_depends_only_on_it() -> None:
    spec = wf(
        step("check"),
        step("maybe", "check", when="steps.check.result.ok"),
        step("after_maybe", "maybe"),
        step("joined", "maybe", "check"),
    )
    assert advance(spec, plain(check=OK)).evaluate == ["maybe"]
    observed = plain(check=OK) | {"maybe": StepState(condition=False)}
    assert phases(spec, observed) == {
        "check": "Succeeded/Succeeded",
        "maybe": "Skipped/ConditionFalse",
        "after_maybe": "Skipped/UpstreamSkipped",
        "joined": "Pending/Ready",  # one dependency succeeded: it runs
    }
    assert advance(spec, observed).enqueue == [ItemRef("joined", None)]


def test_fail_fast_stops_new_steps_lets_running_ones_finish_then_runs_finally() -> None:
    spec = wf(
        step("a"),
        step("b"),
        step("c", "a"),
        step("slow"),
        finally_=[step("cleanup")],
        parallelism=3,
    )
    observed = plain(a=DEAD, slow=RUNNING)
    result = advance(spec, observed)
    assert result.enqueue == [] and result.phase is WorkflowPhase.Running
    assert phases(spec, observed) == {
        "a": "Failed/TaskFailed",
        "b": "Skipped/FailFast",
        "c": "Skipped/UpstreamFailed",
        "slow": "Running/Running",
        "cleanup": "Pending/WaitingForSteps",
    }
    observed = plain(a=DEAD, slow=OK)
    assert advance(spec, observed).enqueue == [ItemRef("cleanup", None)]
    result = advance(spec, plain(a=DEAD, slow=OK, cleanup=OK))
    assert (result.phase, result.reason, result.progress) == (
        WorkflowPhase.Failed,
        "StepFailed",
        "5/5",
    )


def test_continue_runs_every_branch_that_does_not_depend_on_the_failure() -> None:
    spec = wf(step("a"), step("b"), step("c", "a"), step("d", "b"), on_failure="continue")
    result = advance(spec, plain(a=DEAD, b=OK))
    assert result.enqueue == [ItemRef("d", None)]
    assert phases(spec, plain(a=DEAD, b=OK))["c"] == "Skipped/UpstreamFailed"
    assert advance(spec, plain(a=DEAD, b=OK, d=OK)).phase is WorkflowPhase.Failed


def test_parallelism_one_is_a_sequential_group() -> None:
    spec = wf(*(step(f"s{i}") for i in range(5)), parallelism=1)
    assert advance(spec, {}).enqueue == [ItemRef("s0", None)]
    assert advance(spec, plain(s0=RUNNING)).enqueue == []
    assert advance(spec, plain(s0=OK)).enqueue == [ItemRef("s1", None)]


def test_retry_from_failure_continues_once_the_failed_step_is_requeued() -> None:
    spec = wf(step("a"), step("b", "a"), step("other"))
    assert advance(spec, plain(a=DEAD, other=OK)).phase is WorkflowPhase.Failed
    revived = advance(spec, plain(a=QUEUED, other=OK))  # requeued from the DLQ
    assert revived.phase is WorkflowPhase.Running
    assert advance(spec, plain(a=OK, other=OK)).enqueue == [ItemRef("b", None)]


def test_suspend_and_cancel_start_nothing() -> None:
    suspended = advance(wf(step("a"), step("b"), suspend=True), plain(a=RUNNING))
    assert (suspended.enqueue, suspended.phase) == ([], WorkflowPhase.Suspended)
    spec = wf(step("a"), step("b"), cancel=True, finally_=[step("f")])
    assert advance(spec, plain(a=RUNNING)).phase is WorkflowPhase.Running  # cancelling
    done = advance(spec, plain(a=State.cancelled))
    assert (done.enqueue, done.phase) == ([], WorkflowPhase.Cancelled)


def test_a_passed_deadline_stops_like_a_cancel_but_fails() -> None:
    spec = wf(step("a"), step("b", "a"), finally_=[step("f")], deadline="10s")
    stopping = advance(spec, plain(a=RUNNING), deadline_passed=True)
    assert (stopping.enqueue, stopping.phase, stopping.reason) == (
        [],
        WorkflowPhase.Running,
        "Cancelling",
    )
    ended = advance(spec, plain(a=State.cancelled), deadline_passed=True)
    assert (ended.phase, ended.reason) == (WorkflowPhase.Failed, "DeadlineExceeded")
    # a workflow that ended before its deadline (or a cancel) keeps its outcome
    done = plain(a=OK, b=OK, f=OK)
    assert advance(spec, done, deadline_passed=True).phase is WorkflowPhase.Succeeded
    cancelled_late = wf(step("a"), cancel=True)
    assert advance(cancelled_late, plain(a=OK)).phase is WorkflowPhase.Succeeded


def test_cycles_are_found_and_named() -> None:
    spec = wf(step("a", "c"), step("b", "a"), step("c", "b"), step("d"))
    assert find_cycle(spec.steps) == ["a", "c", "b", "a"]
    assert find_cycle(DIAMOND.steps) is None


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([step("a"), step("a")], "'a' is used twice"),
        ([step("a", "ghost")], "depends on 'ghost'"),
        ([step("a", "a")], "depends on itself"),
    ],
)
def test_bad_graphs_are_refused_naming_the_step(steps: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        wf(*steps)


RESULTS = {"download": {"path": "/tmp/cat.jpg", "size": 1234, "tags": ["a", "b"]}, "n": 3}


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("{{ steps.download.result.path }}", "/tmp/cat.jpg"),
        ("{{steps.download.result.size}}", 1234),  # the whole string: keeps its JSON type
        ("{{ steps.download.result }}", RESULTS["download"]),
        ("{{ steps.download.result.tags[1] }}", "b"),
        ("size={{ steps.download.result.size }} of {{ steps.n.result }}", "size=1234 of 3"),
        ({"in": ["{{ steps.download.result.path }}", 1]}, {"in": ["/tmp/cat.jpg", 1]}),
        ("no reference", "no reference"),
    ],
)
def test_references_are_replaced(template: Any, rendered: Any) -> None:
    assert render(template, RESULTS) == rendered


def test_fan_out_items_and_missing_references() -> None:
    assert render({"url": "{{ item.url }}", "i": "{{ index }}"}, {}, {"url": "u"}, 7) == {
        "url": "u",
        "i": 7,
    }
    with pytest.raises(MissingReference, match=r"steps\.resize\.result.*has no result"):
        render("{{ steps.resize.result.path }}", RESULTS)
    with pytest.raises(MissingReference, match=r"no \.width in"):
        render("{{ steps.download.result.width }}", RESULTS)
    assert referenced_steps({"a": ["{{ steps.x.result }}", "{{ steps.y.result.z }}"]}) == {"x", "y"}


def test_the_workflow_models_give_a_structural_schema() -> None:
    from taskorch.api.crd import openapi_schema
    from taskorch.api.workflow import WorkflowStatus
    from tests.unit.test_crds import _walk

    spec = openapi_schema(WorkflowSpec)
    assert _walk(spec) == [] and _walk(openapi_schema(WorkflowStatus)) == []
    assert "finally" in spec["properties"] and "finally_" not in spec["properties"]
    step = spec["properties"]["steps"]["items"]
    assert step["properties"]["forEach"].get("x-kubernetes-preserve-unknown-fields")
    assert all(v.get("description") for v in step["properties"].values() if "$ref" not in v)


def test_status_stays_bounded_for_a_10000_item_fan_out_and_200_steps() -> None:
    import json

    from taskorch.controller.workflow_status import workflow_status
    from taskorch.queue.model import TaskInfo

    error = {"type": "RuntimeError", "reason": "MaxAttemptsExceeded", "message": "x" * 1000}
    fan = wf(step("each", forEach="steps.list.result"), *(step(f"s{i}") for i in range(199)))
    records = {
        "each": {
            i: TaskInfo(
                id=f"u.each.{i}",
                namespace="ns",
                queue="q",
                type="t",
                state=DEAD if i % 2 else OK,
                attempt=1,
                failures=i % 2,
                payload=None,
                error=error if i % 2 else None,
                started_ms=1_000,
                finished_ms=2_000,
            )
            for i in range(10_000)
        }
    }
    observed = {
        "each": StepState(items=10_000, states={i: r.state for i, r in records["each"].items()})
    }
    adv = advance(fan, observed)
    status = workflow_status(fan, adv, records, {}, {}, 1, 0, 3_000)
    size = len(json.dumps(status))
    assert size < 256 * 1024, size
    each = status["steps"][0]
    assert each["counts"] == {"Succeeded": 5000, "Failed": 5000} and len(each["failures"]) == 5
