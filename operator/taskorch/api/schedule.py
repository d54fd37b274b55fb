"""Schedule: recurring work (DESIGN §4). Each tick of `schedule` creates one Task or Workflow
from the template, named `<schedule>-<unix minute of the tick>` (seconds for a 6-field
expression), so a tick fires once even across operator restarts. The pure decisions are in
controller/cron.py; the glue in controller/schedules.py."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from importlib.resources import files
from typing import Annotated, Any

from pydantic import Field

from taskorch.api.base import GROUP, VERSION, ApiModel, Condition
from taskorch.api.task import TaskSpec
from taskorch.api.workflow import WorkflowSpec

LABEL = "taskorch.io/schedule"  # on each child: its Schedule's name
SCHEDULED_AT = "taskorch.io/scheduled-at"  # on each child: its tick
# Child names append "-" and up to 11 digits to the Schedule's name, within 63 characters.
MAX_NAME = 52


@cache
def time_zones() -> list[str]:
    """The IANA zones a timeZone may name, from the checked-in list (so the CRD's enum does not
    change with the tzdata installed where it is generated)."""
    text = (files("taskorch.api") / "timezones.txt").read_text()
    return [z for z in text.splitlines() if z and not z.startswith("#")]


TimeZone = Annotated[str, Field(json_schema_extra={"enum": time_zones()})]


class ConcurrencyPolicy(StrEnum):
    Allow = "Allow"  # children may overlap
    Forbid = "Forbid"  # a tick is skipped while the previous child runs
    Replace = "Replace"  # the running child is cancelled, then the new one starts


class MissedRuns(StrEnum):
    RunLatest = "RunLatest"  # after downtime or suspend: the latest missed tick, once
    Skip = "Skip"  # a tick that could not fire on time is not made up


class TemplateMeta(ApiModel):
    labels: dict[str, str] | None = Field(default=None, description="Added to each child.")
    annotations: dict[str, str] | None = Field(default=None, description="Added to each child.")


class TaskTemplate(ApiModel):
    metadata: TemplateMeta | None = None
    spec: TaskSpec = Field(description="The spec of each Task the Schedule creates.")


class WorkflowTemplate(ApiModel):
    metadata: TemplateMeta | None = None
    spec: WorkflowSpec = Field(description="The spec of each Workflow the Schedule creates.")


class ScheduleSpec(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.taskTemplate) != has(self.workflowTemplate)",
                    "message": "set exactly one of taskTemplate and workflowTemplate",
                }
            ]
        }
    }

    schedule: str = Field(
        min_length=1,
        max_length=128,
        description="Cron: 5 fields (minute hour day-of-month month day-of-week), 6 with "
        "seconds first, or a macro (@hourly, @daily, @weekly, @monthly, @yearly).",
    )
    time_zone: TimeZone | None = Field(
        default=None, description="IANA time zone of the schedule (default UTC)."
    )
    concurrency_policy: ConcurrencyPolicy = Field(
        default=ConcurrencyPolicy.Allow,
        description="Allow overlapping children, Forbid (skip a tick while one runs), or Replace "
        "(cancel the running one).",
    )
    starting_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        description="A tick later than this (the operator was down, the Schedule suspended) is "
        "not started.",
    )
    missed_runs: MissedRuns = Field(
        default=MissedRuns.RunLatest,
        description="After downtime or suspend: RunLatest runs the latest missed tick once "
        "(if within startingDeadlineSeconds, when set); Skip runs a tick only on time: at most "
        "60 s late (or startingDeadlineSeconds, if shorter).",
    )
    suspend: bool = Field(default=False, description="No new children while true.")
    successful_history_limit: int = Field(
        default=3, ge=0, le=100, description="Succeeded children kept; older ones are deleted."
    )
    failed_history_limit: int = Field(
        default=1, ge=0, le=100, description="Failed children kept; older ones are deleted."
    )
    task_template: TaskTemplate | None = Field(
        default=None, description="Each tick creates a Task."
    )
    workflow_template: WorkflowTemplate | None = Field(
        default=None, description="Each tick creates a Workflow."
    )


class ChildRef(ApiModel):
    name: str
    kind: str
    phase: str | None = None
    scheduled_time: datetime | None = None


class ScheduleStatus(ApiModel):
    conditions: list[Condition] | None = Field(
        default=None, description="Ready (False: InvalidSpec with the cron parser's message)."
    )
    observed_generation: int | None = None
    last_schedule_time: datetime | None = Field(
        default=None, description="The tick of the last child created."
    )
    last_tick_time: datetime | None = Field(
        default=None,
        description="The last tick decided (run or skipped); ticks after it are still to come.",
    )
    next_schedule_time: datetime | None = None
    last_successful_time: datetime | None = Field(
        default=None, description="When the last child that succeeded finished."
    )
    active: list[ChildRef] | None = Field(default=None, description="Children still running.")
    skipped: int | None = Field(
        default=None, description="Ticks skipped so far (Forbid, missed, past the deadline)."
    )
    last_skip: str | None = Field(default=None, description="Why the last tick was skipped.")


def child_kind(spec: dict[str, Any]) -> tuple[str, str]:
    """(kind, plural) of the children a Schedule's spec creates."""
    return ("Task", "tasks") if spec.get("taskTemplate") else ("Workflow", "workflows")


def child_body(schedule: dict[str, Any], name: str | None, tick: datetime | None) -> dict[str, Any]:
    """The child as created: the template as the user wrote it, labelled with its Schedule,
    owned by it (garbage-collected with it), annotated with its tick. `name` None: a name
    generated by the API server (a manual trigger)."""
    meta, spec = schedule["metadata"], schedule["spec"]
    kind, _ = child_kind(spec)
    template = spec.get("taskTemplate") or spec.get("workflowTemplate") or {}
    tmeta = template.get("metadata") or {}
    annotations = dict(tmeta.get("annotations") or {})
    if tick is not None:
        annotations[SCHEDULED_AT] = tick.astimezone(UTC).isoformat().replace("+00:00", "Z")
    child_meta: dict[str, Any] = {
        "namespace": meta["namespace"],
        "labels": {**(tmeta.get("labels") or {}), LABEL: meta["name"]},
        "annotations": annotations,
        "ownerReferences": [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Schedule",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
            }
        ],
    }
    if name:
        child_meta["name"] = name
    else:
        child_meta["generateName"] = f"{meta['name']}-manual-"
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": child_meta,
        "spec": template.get("spec") or {},
    }
