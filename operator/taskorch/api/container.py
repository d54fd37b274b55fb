"""Container tasks (`spec.container`): any image, run by the operator as a Kubernetes Job per
attempt (controller/container_tasks.py), from the same Task and Workflow API as handlers.

Only the pod fields a task needs are offered, typed, so `kubectl explain` documents them and
admission checks them; anything more (volumes, sidecars) is what a Job of one's own is for."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from taskorch.api.base import ApiModel, KeyRef

CONTAINER_TYPE = "taskorch.container"  # the queue's type of a container task
# Container tasks of a namespace wait on this queue, served by the operator's job runner (a
# TaskQueue of this name caps, rate-limits or pauses them like any queue).
JOBS_QUEUE = "taskorch.jobs"  # reserved: no Task, step or WorkerPool may name it

Quantity = Annotated[int | str, Field(description="A Kubernetes quantity, e.g. 500m, 2, 1Gi.")]
LabelMap = Annotated[dict[str, Annotated[str, Field(max_length=4096)]], Field(max_length=64)]


class EnvSource(ApiModel):
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

    secret_key_ref: KeyRef | None = Field(default=None, description="A key of a Secret.")
    config_map_key_ref: KeyRef | None = Field(default=None, description="A key of a ConfigMap.")


class ContainerEnv(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.value) && has(self.valueFrom))",
                    "message": "set at most one of value and valueFrom",
                }
            ]
        }
    }

    name: str = Field(max_length=253, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    value: str | None = Field(default=None, max_length=32768)
    value_from: EnvSource | None = Field(
        default=None,
        description="Read the value from a Secret or ConfigMap key when the pod starts.",
    )


class Resources(ApiModel):
    requests: dict[str, Quantity] | None = Field(
        default=None, description="What the pod is scheduled by, e.g. {cpu: 500m, memory: 1Gi}."
    )
    limits: dict[str, Quantity] | None = Field(
        default=None, description="Caps: over the memory limit the container is OOMKilled."
    )


class Toleration(ApiModel):
    key: str | None = Field(default=None, max_length=317)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class ContainerSpec(ApiModel):
    """The pod of one attempt. Its termination message (or, on failure, its last log lines) is
    the result; JSON written to /dev/termination-log becomes the result's `output`."""

    image: str = Field(min_length=1, max_length=1024, description="The image to run.")
    command: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, max_length=256, description="The entrypoint (default: the image's)."
    )
    args: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None,
        max_length=256,
        description="Arguments of the entrypoint. In a Workflow step they may reference upstream "
        "results, like a payload's strings.",
    )
    env: list[ContainerEnv] | None = Field(default=None, max_length=128)
    resources: Resources | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    image_pull_secrets: list[Annotated[str, Field(max_length=253)]] | None = Field(
        default=None, max_length=16, description="Names of Secrets to pull the image with."
    )
    working_dir: str | None = Field(default=None, max_length=4096)
    service_account_name: str | None = Field(
        default=None,
        max_length=253,
        description="The pod's ServiceAccount (default: the namespace's `default`).",
    )
    node_selector: dict[str, str] | None = Field(default=None, max_length=64)
    tolerations: list[Toleration] | None = Field(default=None, max_length=32)
    labels: LabelMap | None = Field(
        default=None, description="Extra labels of the pod (taskorch.io/ keys are taskorch's)."
    )
    annotations: LabelMap | None = Field(default=None, description="Annotations of the pod.")
