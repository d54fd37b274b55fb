"""TaskQueue: a queue's policy, declared (DESIGN §4). Optional: a queue works without one, with
the defaults. The object's name is the queue's name in its namespace; the operator writes the
policy into the queue's Redis `config` hash (queue/policy.py), which every script reads."""

from __future__ import annotations

from pydantic import Field

from taskorch.api.base import ApiModel, Condition, Duration, duration_seconds
from taskorch.api.task import RetryPolicy
from taskorch.queue.policy import DEFAULTS, QueuePolicy


class RateLimit(ApiModel):
    """At most `tasks` attempts start every `per`, across all workers (a token bucket that saves
    up at most one period's worth)."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "duration(self.per) >= duration('1ms')",
                    "message": "per must be at least 1ms",
                    "fieldPath": ".per",
                }
            ]
        }
    }

    tasks: int = Field(ge=1, le=1_000_000, description="Attempts allowed per period.")
    per: Duration = Field(default="1s", description="The period, e.g. 1s, 1m.")


class DeadLetter(ApiModel):
    """Bounds on the dead-letter queue; the oldest dead tasks go first, with their data."""

    max_size: int = Field(
        default=DEFAULTS.dlq_cap, ge=1, le=10_000_000, description="Dead tasks kept."
    )
    retention: Duration = Field(
        default="168h", description="How long a dead task is kept; 0s: until maxSize pushes it out."
    )


class TaskQueueSpec(ApiModel):
    paused: bool = Field(
        default=False,
        description="No task of the queue starts while true (running ones finish); tasks are "
        "still accepted. `taskorch pause/resume` patch this field.",
    )
    rate_limit: RateLimit | None = Field(default=None, description="Start rate limit.")
    max_concurrent: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Tasks running at once, across all workers."
    )
    default_retry: RetryPolicy | None = Field(
        default=None,
        description="Retry policy of tasks whose Task, step or handler sets none.",
    )
    max_recoveries: int = Field(
        default=DEFAULTS.max_recoveries,
        ge=0,
        le=100,
        description="How often a task may lose its worker (crash, OOM kill) before it is "
        "dead-lettered as LostWorkerLimit.",
    )
    dead_letter: DeadLetter | None = Field(default=None, description="DLQ bounds.")
    result_retention: Duration = Field(
        default="24h", description="How long finished tasks (and their results) stay in Redis."
    )

    def policy(self) -> QueuePolicy:
        dlq = self.dead_letter or DeadLetter()
        return QueuePolicy(
            paused=self.paused,
            rate_tasks=self.rate_limit.tasks if self.rate_limit else 0,
            rate_per_seconds=duration_seconds(self.rate_limit.per) if self.rate_limit else 0.0,
            max_concurrent=self.max_concurrent or 0,
            max_recoveries=self.max_recoveries,
            dlq_cap=dlq.max_size,
            dlq_retention_seconds=int(duration_seconds(dlq.retention)),
            result_retention_seconds=max(1, int(duration_seconds(self.result_retention))),
            default_retry=(
                self.default_retry.model_dump(by_alias=True, exclude_none=True)
                if self.default_retry
                else None
            ),
        )


class TaskQueueStatus(ApiModel):
    """The queue as Redis holds it, refreshed on an interval (written only when it changed)."""

    conditions: list[Condition] | None = Field(
        default=None,
        description="Ready: the policy is in Redis (False: InvalidSpec, RedisUnreachable).",
    )
    observed_generation: int | None = None
    ready: int | None = Field(default=None, description="Tasks waiting to be claimed.")
    active: int | None = Field(default=None, description="Tasks running.")
    delayed: int | None = Field(default=None, description="Tasks waiting for runAt or a retry.")
    dead: int | None = Field(default=None, description="Tasks in the dead-letter queue.")
    oldest_ready_age: str | None = Field(
        default=None, description="How long the oldest ready task has waited."
    )
    throughput: str | None = Field(
        default=None, description="Tasks finished per second over the last refresh interval."
    )
    paused: bool | None = Field(default=None, description="Whether Redis has the queue paused.")
