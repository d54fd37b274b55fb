"""Workflow: a DAG of steps (DESIGN §4). Steps are Redis tasks, not Task objects; their ids are
`<workflow uid>.<step>[.<index>]`, so enqueueing is idempotent and an operator restart rebuilds
the state from Redis.

The pure engine is controller/dag.py; the operator's glue controller/workflows.py.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, JsonValue, model_validator
from pydantic.config import JsonDict

from taskorch.api.base import ApiModel, Condition, Duration
from taskorch.api.container import JOBS_QUEUE, ContainerSpec
from taskorch.api.task import (
    ONE_KIND_OF_WORK,
    ONE_KIND_OF_WORK_MESSAGE,
    Command,
    ConcurrencyKey,
    EnvVar,
    MaxConcurrent,
    Priority,
    QueueName,
    RetryPolicy,
    TaskType,
    one_kind_of_work,
)

MAX_STEPS = 200
MAX_FINALLY = 50
StepName = Annotated[
    str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$")
]


class OnFailure(StrEnum):
    failFast = "failFast"  # no new steps after a failure; running ones finish, then finally
    continue_ = "continue"  # every branch that does not depend on the failure runs


class WorkflowStep(ApiModel):
    """One step: a handler (`type`), a `command` or a `container`, whose input may reference
    upstream results."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.dependsOn) || !(self.name in self.dependsOn)",
                    "message": "a step cannot depend on itself",
                    "fieldPath": ".dependsOn",
                },
                {"rule": ONE_KIND_OF_WORK, "message": ONE_KIND_OF_WORK_MESSAGE},
                {
                    "rule": "!has(self.container) || (!has(self.payload) && !has(self.env)"
                    " && !has(self.workingDir) && !has(self.queue))",
                    "message": "a container step takes its env and workingDir inside container, "
                    f"no payload, and no queue (it waits on the operator's {JOBS_QUEUE} queue)",
                },
                {
                    "rule": "has(self.command) ? !has(self.payload)"
                    " : !has(self.env) && !has(self.workingDir)",
                    "message": "a command step takes env and workingDir, not payload; a handler "
                    "step (type) takes payload, not env or workingDir",
                },
            ]
        }
    }

    name: StepName = Field(description="Unique within the workflow (steps and finally).")
    type: TaskType | None = Field(
        default=None,
        description="Handler that runs the step, as registered in the workers (exactly one of "
        "type and command).",
    )
    command: Command | None = Field(
        default=None,
        description="Run this argv on a worker started with --allow-commands instead of a "
        "handler; its strings may reference upstream results like a payload's.",
    )
    container: ContainerSpec | None = Field(
        default=None,
        description="Run this container as a Kubernetes Job per attempt (as a Task's "
        "spec.container); its args may reference upstream results like a payload's.",
    )
    env: list[EnvVar] | None = Field(
        default=None, max_length=64, description="Environment variables of the command."
    )
    working_dir: str | None = Field(
        default=None, max_length=4096, description="Directory the command runs in."
    )
    payload: dict[str, JsonValue] | None = Field(
        default=None,
        description="The handler's input. A string `{{ steps.NAME.result.FIELD }}` is replaced "
        "by that upstream result (keeping its JSON type when it is the whole string); in a "
        "forEach step, `{{ item }}` and `{{ index }}` are the item and its position.",
    )
    depends_on: list[StepName] | None = Field(
        default=None, max_length=32, description="Steps that must succeed first."
    )
    when: str | None = Field(
        default=None,
        max_length=1024,
        description="A CEL condition over upstream results (`steps.NAME.result`); false skips "
        "the step (reason ConditionFalse) and the steps that depend only on it.",
    )
    for_each: list[JsonValue] | str | None = Field(
        default=None,
        description="Fan out: a list, or a CEL expression over upstream results giving one; the "
        "step runs once per item, its result is the list of the items' results in order.",
    )
    retry: RetryPolicy | None = Field(default=None, description="As a Task's spec.retry.")
    timeout: Duration | None = Field(default=None, description="Limit on one attempt.")
    queue: QueueName | None = Field(
        default=None, description="Queue of the step's tasks; default: the workflow's queue."
    )
    priority: Priority | None = None
    concurrency_key: ConcurrencyKey | None = Field(
        default=None,
        description="As a Task's: at most maxConcurrent tasks with this key run at once across "
        "the queue, this step's items included, in order.",
    )
    max_concurrent: MaxConcurrent = 1

    @model_validator(mode="after")
    def _one_kind_of_work(self) -> WorkflowStep:
        # The CEL rules above, for the operator's own validation of a stored spec.
        try:
            one_kind_of_work(self.type, self.command, self.container)
        except ValueError as e:
            raise ValueError(f"step {self.name}: {e}") from None
        if self.container is not None and (
            self.payload is not None or self.env or self.working_dir or self.queue
        ):
            raise ValueError(
                f"step {self.name}: a container step takes no payload, env, workingDir or queue"
            )
        if self.command is not None and self.payload is not None:
            raise ValueError(f"step {self.name}: a command step takes env, not payload")
        if self.type is not None and (self.env or self.working_dir):
            raise ValueError(f"step {self.name}: env and workingDir go with a command")
        return self


# Names unique per list (a list-map keyed by name: the API server refuses a duplicate itself).
_BY_NAME: JsonDict = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}


class WorkflowSpec(ApiModel):
    """A DAG of steps, run as Redis tasks. Immutable once created, except suspend and cancel."""

    # Admission checks only what CEL can afford over 200 steps (its cost budget refuses an
    # all-pairs dependsOn check): unknown dependencies and cycles are the operator's
    # (InvalidSpec). Edits of the steps are ignored: the operator runs the spec it first saw.
    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.finally) || self.finally.all(f, "
                    "!self.steps.exists(s, s.name == f.name))",
                    "message": "a finally step cannot reuse the name of a step",
                    "fieldPath": ".finally",
                },
            ]
        }
    }

    steps: list[WorkflowStep] = Field(
        min_length=1,
        max_length=MAX_STEPS,
        description="The DAG, by dependsOn.",
        json_schema_extra=_BY_NAME,
    )
    finally_: list[WorkflowStep] | None = Field(
        default=None,
        alias="finally",
        max_length=MAX_FINALLY,
        json_schema_extra=_BY_NAME,
        description="Steps that run once every step ended, whatever happened (Argo's onExit); "
        "they may depend on each other, not on the main steps.",
    )
    parallelism: int | None = Field(
        default=None,
        ge=1,
        description="At most this many steps and forEach items at once; 1 runs them one at a "
        "time (a sequential group).",
    )
    on_failure: OnFailure = Field(
        default=OnFailure.failFast,
        description="failFast: no new steps after a failure (running ones finish, then finally "
        "runs); continue: every step that does not depend on a failed one runs.",
    )
    queue: QueueName = Field(default="default", description="Queue of every step that names none.")
    priority: Priority = "normal"
    deadline: Duration | None = Field(
        default=None,
        description="Limit on the whole workflow, from its creation: past it, running steps "
        "are cancelled, nothing new (not even finally) starts, and it ends Failed with reason "
        "DeadlineExceeded.",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the Workflow this long after it ended."
    )
    suspend: bool = Field(
        default=False, description="Start no new steps while true; running ones go on."
    )
    cancel: bool = Field(
        default=False, description="Set true to cancel: running steps are interrupted."
    )

    @model_validator(mode="after")
    def _names_and_dependencies(self) -> WorkflowSpec:
        # Also refused at admission by the CRD's CEL rules; the operator checks again (an
        # older CRD, or a client that skipped admission) and finds cycles, which CEL cannot.
        main = [s.name for s in self.steps]
        final = [s.name for s in self.finally_ or []]
        seen: set[str] = set()
        for name in main + final:
            if name in seen:
                raise ValueError(f"step name {name!r} is used twice")
            seen.add(name)
        for group, names in (("steps", set(main)), ("finally", set(final))):
            for step in self.steps if group == "steps" else self.finally_ or []:
                for dep in step.depends_on or []:
                    if dep == step.name:
                        raise ValueError(f"{group} {step.name!r} depends on itself")
                    if dep not in names:
                        raise ValueError(
                            f"{group} {step.name!r} depends on {dep!r}, which is not one of the "
                            f"workflow's {group}"
                        )
        return self


class WorkflowPhase(StrEnum):
    Pending = "Pending"
    Running = "Running"
    Suspended = "Suspended"
    Succeeded = "Succeeded"
    Failed = "Failed"
    Cancelled = "Cancelled"


TERMINAL_WORKFLOW_PHASES = frozenset(
    {WorkflowPhase.Succeeded, WorkflowPhase.Failed, WorkflowPhase.Cancelled}
)


class StepPhase(StrEnum):
    Pending = "Pending"  # waiting for its dependencies (or for capacity under parallelism)
    Running = "Running"  # enqueued, not ended (queued, running or retrying items)
    Succeeded = "Succeeded"
    Failed = "Failed"
    Skipped = "Skipped"
    Cancelled = "Cancelled"


TERMINAL_STEP_PHASES = frozenset(
    {StepPhase.Succeeded, StepPhase.Failed, StepPhase.Skipped, StepPhase.Cancelled}
)


class StepFailure(ApiModel):
    index: int | None = Field(default=None, description="The forEach item, if any.")
    reason: str
    message: str = Field(default="", max_length=1024)


class StepSummary(ApiModel):
    """One step's state; bounded whatever its fan-out."""

    name: str
    phase: StepPhase
    reason: str | None = None
    message: str | None = Field(default=None, description="The failure, for a failed step.")
    attempts: int | None = Field(default=None, description="Attempts of a plain step.")
    start_time: datetime | None = None
    completion_time: datetime | None = None
    items: int | None = Field(default=None, description="forEach: how many items.")
    counts: dict[str, int] | None = Field(
        default=None, description="forEach: items per phase (Succeeded, Running, Failed, …)."
    )
    failures: list[StepFailure] | None = Field(
        default=None, max_length=5, description="The first few failed items or the failure."
    )


class WorkflowStatus(ApiModel):
    """What happened, written by the operator only; bounded whatever the fan-out."""

    phase: WorkflowPhase = Field(default=WorkflowPhase.Pending, description="Where it is now.")
    progress: str | None = Field(default=None, description="Steps ended / all steps, e.g. 2/3.")
    conditions: list[Condition] | None = Field(
        default=None, description="Succeeded (True/False/Unknown; its reason says why)."
    )
    observed_generation: int | None = None
    start_time: datetime | None = Field(default=None, description="The first step's start.")
    completion_time: datetime | None = None
    duration: str | None = Field(default=None, description="Creation to completion.")
    steps: list[StepSummary] | None = Field(default=None, description="Every step's state.")
    result: JsonValue = Field(
        default=None,
        description="The results of the steps nothing depends on, by step name, when at most "
        "4 KiB.",
    )
