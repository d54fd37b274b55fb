"""WorkerPool: which Deployment serves which queues, and how the operator scales it by queue
depth (DESIGN §4 WorkerPool). The recommendation is controller/scaling.py; the loop
controller/workerpools.py."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from taskorch.api.base import ApiModel, Condition, Duration
from taskorch.api.task import QueueName


class ScaleTargetRef(ApiModel):
    """The worker Deployment, in the WorkerPool's namespace. Leave its spec.replicas unset in
    the manifest so Helm or a GitOps tool does not fight the scaler over it."""

    name: str = Field(min_length=1, max_length=253, description="The Deployment's name.")


class ScaleDown(ApiModel):
    stabilization_window_seconds: int = Field(
        default=300,
        ge=0,
        le=3600,
        description="Scale down only to the highest replica count recommended in this window "
        "(no flapping when the backlog dips).",
    )
    max_step_percent: int = Field(
        default=25,
        ge=1,
        le=100,
        description="Remove at most this share of the replicas (at least 1) a step.",
    )


class WorkerPoolSpec(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.minReplicas <= self.maxReplicas",
                    "message": "minReplicas must not exceed maxReplicas",
                    "fieldPath": ".minReplicas",
                },
                {
                    "rule": "!has(self.replicas) || (self.replicas >= self.minReplicas && "
                    "self.replicas <= self.maxReplicas)",
                    "message": "replicas (set through /scale) must be within minReplicas and "
                    "maxReplicas",
                    "fieldPath": ".replicas",
                },
            ]
        }
    }

    scale_target_ref: ScaleTargetRef = Field(description="The worker Deployment to scale.")
    queues: list[QueueName] = Field(
        min_length=1,
        max_length=32,
        description="The queues its workers serve (as their --queues): their backlog and "
        "in-flight tasks drive the scaling.",
    )
    concurrency: int = Field(ge=1, le=10_000, description="Task slots per worker (--concurrency).")
    min_replicas: int = Field(default=0, ge=0, le=10_000, description="0 scales to zero.")
    max_replicas: int = Field(ge=1, le=10_000, description="The most workers it may run.")
    target_utilization: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Share of the slots to fill: 0.8 keeps 20 % headroom for bursts.",
    )
    activation_threshold: int = Field(
        default=0,
        ge=0,
        description="From 0 replicas, wake only when backlog + in-flight exceeds this.",
    )
    poll_interval: Duration = Field(default="5s", description="How often the queues are read.")
    cooldown_seconds: int = Field(
        default=300,
        ge=0,
        description="Scale to 0 only after the queues were empty and idle for this long.",
    )
    scale_down: ScaleDown | None = Field(default=None, description="How fast to scale down.")
    replicas: int | None = Field(
        default=None,
        ge=0,
        description="Set through the /scale subresource by an HPA or KEDA that owns the "
        "replica count; the built-in scaler then stands aside and only applies it (still "
        "draining idle workers first). Leave it unset for the built-in scaler.",
    )


class WorkerPoolStatus(ApiModel):
    conditions: list[Condition] | None = Field(
        default=None,
        description="MetricsAvailable (the queues could be read), ScalingActive (False: an "
        "external owner sets replicas, or the Deployment is missing).",
    )
    observed_generation: int | None = None
    replicas: int | None = Field(default=None, description="The Deployment's replicas.")
    desired: int | None = Field(default=None, description="The replicas wanted now.")
    recommended: int | None = Field(
        default=None,
        description="What the built-in scaler recommends (the same as desired unless an "
        "external owner sets replicas); KEDA's metrics-api scaler can read it.",
    )
    backlog: int | None = Field(default=None, description="Ready tasks of the queues.")
    in_flight: int | None = Field(default=None, description="Tasks running on any worker.")
    busy: int | None = Field(default=None, description="The pool's workers running a task.")
    workers: int | None = Field(default=None, description="The pool's workers heartbeating.")
    last_scale_time: datetime | None = None
    last_scale_reason: str | None = Field(default=None, description="Why it last scaled.")
    selector: str | None = Field(
        default=None, description="The Deployment's pod selector (for the /scale subresource)."
    )
