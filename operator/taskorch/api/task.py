"""Task: one unit of work (DESIGN §4)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, JsonValue, model_validator

from taskorch.api.base import ApiModel, Condition, Duration, KeyRef, duration_seconds
from taskorch.api.container import CONTAINER_TYPE, JOBS_QUEUE, ContainerSpec

# Named priorities map onto the 0–9 scale (9 most urgent), leaving room above and below them.
PRIORITY_NAMES = {"high": 8, "normal": 5, "low": 2}
Priority = Annotated[
    # The bounds are checked by pydantic (the SDK) and by the CEL rule (kubectl apply) alike.
    Annotated[int, Field(ge=0, le=9)] | Literal["high", "normal", "low"],
    Field(
        description="high, normal or low, or 0–9 where 9 is the most urgent "
        "(high=8, normal=5, low=2). Ready work is claimed strictly from the highest priority down.",
        json_schema_extra={
            "maxLength": 6,  # bounds CEL's cost estimate where many items carry a priority
            "x-kubernetes-validations": [
                {
                    "rule": "type(self) == int ? (self >= 0 && self <= 9)"
                    " : self in ['high', 'normal', 'low']",
                    "message": "priority must be high, normal, low or an integer 0-9",
                }
            ],
        },
    ),
]


# A handler's name, and a queue's (it is part of Redis key names): one definition for Tasks,
# Workflow steps and the SDK.
TASK_TYPE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.:-]*$"
TaskType = Annotated[str, Field(min_length=1, max_length=253, pattern=TASK_TYPE_PATTERN)]
QUEUE_PATTERN = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"
RESERVED_QUEUE_PREFIX = "taskorch."  # taskorch's own queues: taskorch.jobs (container tasks)


def _not_reserved(queue: str) -> str:
    if queue.startswith(RESERVED_QUEUE_PREFIX):
        raise ValueError(f"queues named {RESERVED_QUEUE_PREFIX}* are taskorch's own")
    return queue


QueueName = Annotated[
    str,
    Field(
        max_length=63,
        pattern=QUEUE_PATTERN,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"!self.startsWith('{RESERVED_QUEUE_PREFIX}')",
                    "message": f"queues named {RESERVED_QUEUE_PREFIX}* are taskorch's own",
                }
            ]
        },
    ),
    AfterValidator(_not_reserved),
]
ConcurrencyKey = Annotated[str, Field(min_length=1, max_length=256)]
MaxConcurrent = Annotated[
    int,
    Field(ge=1, le=10_000, description="How many tasks of the concurrencyKey may run at once."),
]


def priority_level(priority: int | str) -> int:
    return PRIORITY_NAMES[priority] if isinstance(priority, str) else int(priority)


class Backoff(StrEnum):
    exponential = "exponential"
    linear = "linear"
    fixed = "fixed"


class RetryPolicy(ApiModel):
    """How failed attempts are retried before the task is dead-lettered."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.initialDelay) || !has(self.maxDelay)"
                    " || duration(self.initialDelay) <= duration(self.maxDelay)",
                    "message": "initialDelay must not exceed maxDelay",
                    "fieldPath": ".initialDelay",
                }
            ]
        }
    }

    max_attempts: int = Field(
        default=3, ge=1, le=100, description="Handler attempts in all, the first one included."
    )
    backoff: Backoff = Field(
        default=Backoff.exponential,
        description="exponential (initialDelay × 2^n), linear (initialDelay × n) or fixed.",
    )
    initial_delay: Duration = Field(default="1s", description="Delay before the first retry.")
    max_delay: Duration = Field(default="5m", description="Cap on any one retry delay.")
    jitter: bool = Field(
        default=True,
        description="Full jitter: each delay is drawn uniformly from [0, computed delay], so "
        "retries of many tasks do not arrive in lockstep.",
    )
    retry_on: list[Annotated[str, Field(max_length=256)]] | None = Field(
        default=None,
        max_length=32,
        description="Retry only errors of these classes (exception class names, matched along "
        "the class hierarchy). Default: every error but the ones in noRetryOn.",
    )
    no_retry_on: list[Annotated[str, Field(max_length=256)]] | None = Field(
        default=None,
        max_length=32,
        description="Never retry errors of these classes; they dead-letter the task at once.",
    )

    @model_validator(mode="after")
    def _delays_in_order(self) -> RetryPolicy:
        # The CEL rule above, for callers that do not go through the API server (the SDK).
        if duration_seconds(self.initial_delay) > duration_seconds(self.max_delay):
            raise ValueError("initialDelay must not exceed maxDelay")
        return self


class PayloadSource(ApiModel):
    """A payload field filled in by the operator at enqueue time from a Secret or ConfigMap key."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.secretKeyRef) != has(self.configMapKeyRef)",
                    "message": "set exactly one of secretKeyRef and configMapKeyRef",
                }
            ]
        }
    }

    field: str = Field(max_length=253, description="Top-level payload field to set.")
    secret_key_ref: KeyRef | None = Field(default=None, description="Read the value from a Secret.")
    config_map_key_ref: KeyRef | None = Field(
        default=None, description="Read the value from a ConfigMap."
    )


COMMAND_TYPE = "taskorch.command"  # the queue's type of a command task (worker/commands.py)


class EnvVar(ApiModel):
    name: str = Field(max_length=253, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    value: str = Field(default="", max_length=32768)


Command = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=4096)]],
    Field(
        min_length=1,
        max_length=256,
        description="Run this argv on a worker started with --allow-commands (its executable "
        "must be in the worker's allow-list), without a shell: write [sh, -c, ...] for one. "
        "stdout and stderr tails are the result; an exit code other than 0 fails the attempt.",
    ),
]


_IMMUTABLE = (
    "type",
    "command",
    "container",
    "env",
    "workingDir",
    "queue",
    "payload",
    "payloadFrom",
    "priority",
    "retry",
    "timeout",
    "deadline",
    "runAt",
    "delay",
    "idempotencyKey",
    "concurrencyKey",
    "maxConcurrent",
)


# Exactly one of type, command and container: one CEL rule for Tasks and Workflow steps.
ONE_KIND_OF_WORK = (
    "(has(self.type) ? 1 : 0) + (has(self.command) ? 1 : 0) + (has(self.container) ? 1 : 0) == 1"
)
ONE_KIND_OF_WORK_MESSAGE = "set exactly one of type (a handler), command and container"


def one_kind_of_work(type_: str | None, command: object, container: object) -> None:
    """The CEL rule, for callers that do not go through the API server."""
    if sum(v is not None for v in (type_, command, container)) != 1:
        raise ValueError(ONE_KIND_OF_WORK_MESSAGE)


def _unchanged(field: str) -> str:
    return (
        f"has(self.{field}) == has(oldSelf.{field})"
        f" && (!has(self.{field}) || self.{field} == oldSelf.{field})"
    )


class TaskSpec(ApiModel):
    """What to run, where and how. Immutable once created, except cancel and releasing suspend."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.runAt) || !has(self.delay)",
                    "message": "set at most one of runAt and delay",
                },
                {
                    "rule": ONE_KIND_OF_WORK,
                    "message": ONE_KIND_OF_WORK_MESSAGE,
                },
                {
                    "rule": "!has(self.container) || (!has(self.payload)"
                    " && !has(self.payloadFrom) && !has(self.env) && !has(self.workingDir))",
                    "message": "a container takes its env and workingDir inside container, "
                    "and no payload or payloadFrom",
                },
                {
                    "rule": "!has(self.container) || self.queue == 'default'",
                    "message": f"a container task waits on the operator's {JOBS_QUEUE} queue: "
                    "leave queue unset",
                    "fieldPath": ".queue",
                },
                {
                    "rule": "has(self.command) ? !has(self.payload) && !has(self.payloadFrom)"
                    " : !has(self.env) && !has(self.workingDir)",
                    "message": "a command takes env and workingDir, not payload or payloadFrom;"
                    " a handler (type) takes payload, not env or workingDir",
                },
                {
                    # `self == oldSelf` first: the API server evaluates every rule again on each
                    # status write, and comparing the few fields a Task sets costs it far less
                    # than 17 has()/== pairs (profiled: CEL fell from 18 % to 10 % of its CPU
                    # per status write).
                    "rule": "self == oldSelf || ("
                    + " && ".join(_unchanged(f) for f in _IMMUTABLE)
                    + ")",
                    "message": "a Task's spec is immutable once created (only cancel and "
                    "suspend may change): create a new Task instead",
                },
            ]
        }
    }

    type: TaskType | None = Field(
        default=None,
        description="Name of the handler that runs this task, as registered in the workers "
        "(exactly one of type, command and container).",
    )
    command: Command | None = None
    container: ContainerSpec | None = Field(
        default=None,
        description="Run this container as a Kubernetes Job per attempt, created by the "
        "operator (where the chart enables container tasks) and owned by the Task.",
    )
    env: list[EnvVar] | None = Field(
        default=None, max_length=64, description="Environment variables of the command."
    )
    working_dir: str | None = Field(
        default=None, max_length=4096, description="Directory the command runs in."
    )
    queue: QueueName = Field(
        default="default",
        description="Queue to put the task on; only WorkerPools of this namespace serve it.",
    )
    payload: dict[str, JsonValue] | None = Field(
        default=None,
        description="Input of the handler: a JSON object, at most 64 KiB serialized (checked by "
        "the operator). Validated by the handler's payload type.",
    )
    payload_from: list[PayloadSource] | None = Field(
        default=None,
        max_length=16,
        description="Payload fields resolved from Secrets or ConfigMaps when the task is "
        "enqueued. Their values never appear in the Task's status.",
    )
    priority: Priority = "normal"
    retry: RetryPolicy | None = Field(
        default=None,
        description="Retry policy; when unset the handler's own policy applies (default: 3 "
        "attempts, exponential backoff from 1s, full jitter).",
    )
    timeout: Duration | None = Field(
        default=None, description="Limit on one attempt; an attempt that runs longer fails."
    )
    deadline: Duration | None = Field(
        default=None,
        description="Limit on the whole task from creation; no attempt starts after it.",
    )
    run_at: datetime | None = Field(default=None, description="Do not start before this time.")
    delay: Duration | None = Field(default=None, description="Do not start before creation+delay.")
    idempotency_key: str | None = Field(
        default=None,
        max_length=256,
        description="Tasks of one queue with the same key run once while the key is retained "
        "(24 h): a later Task with a held key ends Skipped, reason Duplicate, naming the Task "
        "that holds it.",
    )
    concurrency_key: ConcurrencyKey | None = Field(
        default=None,
        description="Tasks (and workflow steps) of one queue with the same key run at most "
        "maxConcurrent at a time, in the order they were created; other keys and tasks without "
        "one are never held back.",
    )
    max_concurrent: MaxConcurrent = 1
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the Task this long after it finished."
    )
    suspend: bool = Field(
        default=False,
        description="Hold the task out of the queue until set to false.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "!self || oldSelf", "message": "suspend can be cleared, not set again"}
            ]
        },
    )
    cancel: bool = Field(
        default=False,
        description="Set true to cancel: a queued task is removed, a running one is interrupted "
        "at its worker's next heartbeat.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self || !oldSelf", "message": "a cancelled Task cannot be resumed"}
            ]
        },
    )

    @model_validator(mode="after")
    def _one_kind_of_work(self) -> TaskSpec:
        # The CEL rules above, for callers that do not go through the API server.
        one_kind_of_work(self.type, self.command, self.container)
        if self.container is not None and (
            self.payload is not None or self.payload_from or self.env or self.working_dir
        ):
            raise ValueError(
                "a container takes its env and workingDir inside container, and no payload"
            )
        if self.container is not None and self.queue != "default":
            raise ValueError(f"a container task waits on the operator's {JOBS_QUEUE} queue")
        if self.command is not None and (self.payload is not None or self.payload_from):
            raise ValueError("a command takes env and workingDir, not payload or payloadFrom")
        if self.type is not None and (self.env or self.working_dir):
            raise ValueError("env and workingDir go with a command, not a handler (type)")
        return self


class TaskPhase(StrEnum):
    Pending = "Pending"
    Queued = "Queued"
    Scheduled = "Scheduled"
    Running = "Running"
    Retrying = "Retrying"
    Succeeded = "Succeeded"
    Failed = "Failed"
    DeadLettered = "DeadLettered"
    Cancelled = "Cancelled"
    Skipped = "Skipped"  # never ran: another task holds its idempotencyKey (reason Duplicate)


TERMINAL_PHASES = frozenset(
    {
        TaskPhase.Succeeded,
        TaskPhase.Failed,
        TaskPhase.DeadLettered,
        TaskPhase.Cancelled,
        TaskPhase.Skipped,
    }
)


class TaskError(ApiModel):
    type: str = Field(description="Error class, e.g. TimeoutError, UnknownTaskType.")
    reason: str | None = Field(
        default=None, description="Why the attempt failed, e.g. HandlerError, InvalidPayload."
    )
    message: str = Field(default="", description="The error's message (truncated).")
    traceback: str | None = Field(default=None, description="Last lines of the traceback.")


class AttemptRecord(ApiModel):
    attempt: int = Field(description="1 for the first attempt.")
    worker: str | None = Field(default=None, description="Worker that ran it.")
    start_time: datetime | None = None
    finish_time: datetime | None = None
    outcome: str = Field(
        description="Succeeded, Failed, TimedOut, LostWorker, Cancelled, Released (a draining "
        "worker handed it back) or Refused (a worker without the handler handed it back)."
    )
    error: str | None = Field(default=None, description="Error class and message, short.")


class TaskStatus(ApiModel):
    """What happened, written by the operator only."""

    phase: TaskPhase = Field(default=TaskPhase.Pending, description="Where the task is now.")
    conditions: list[Condition] | None = Field(
        default=None, description="Succeeded (True/False/Unknown), DeadLettered, QueueUnavailable."
    )
    observed_generation: int | None = None
    task_id: str | None = Field(
        default=None,
        description="Id of the task in Redis: the UID, or for a Duplicate the id of the task "
        "that holds the idempotencyKey.",
    )
    attempts: int | None = Field(default=None, description="Attempts started so far.")
    start_time: datetime | None = Field(default=None, description="First attempt's start.")
    completion_time: datetime | None = None
    duration: str | None = Field(default=None, description="Creation to completion.")
    worker: str | None = Field(default=None, description="Worker of the latest attempt.")
    last_error: TaskError | None = None
    result: JsonValue = Field(
        default=None, description="The handler's return value when it is at most 4 KiB."
    )
    result_ref: str | None = Field(
        default=None,
        description="Where to read a larger result (`taskorch result` or the SDK's get()).",
    )
    history: list[AttemptRecord] | None = Field(
        default=None, max_length=10, description="The last attempts, newest last."
    )
    next_retry_at: datetime | None = None


def task_queue(spec: dict[str, Any]) -> str:
    """The queue a Task (as stored: camelCase JSON) waits on: its own, or a container task's
    JOBS_QUEUE."""
    return JOBS_QUEUE if spec.get("container") else str(spec.get("queue") or "default")


def runnable(spec: TaskSpec, payload: JsonValue = None) -> tuple[str, JsonValue]:
    """The queue's (type, payload) of a Task spec: a handler's, a command's (the argv, env and
    working directory as the payload of the built-in COMMAND_TYPE), or a container's (its pod
    spec; the operator adds the Job's owner, controller/container_tasks.py)."""
    if spec.container is not None:
        return CONTAINER_TYPE, {"container": container_payload(spec.container)}
    if spec.command is None:
        assert spec.type is not None  # the model's check (and the CRD's CEL rule)
        return spec.type, payload
    return COMMAND_TYPE, command_payload(spec.command, spec.env, spec.working_dir)


def container_payload(container: ContainerSpec) -> dict[str, JsonValue]:
    dumped: dict[str, JsonValue] = container.model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    return dumped


def command_payload(
    argv: list[str], env: list[EnvVar] | None, working_dir: str | None
) -> dict[str, JsonValue]:
    """What a command task carries to the worker (worker/commands.py CommandPayload)."""
    command: dict[str, JsonValue] = {"argv": list(argv)}
    if env:
        command["env"] = {e.name: e.value for e in env}
    if working_dir:
        command["workingDir"] = working_dir
    return command
