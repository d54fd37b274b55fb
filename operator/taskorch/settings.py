"""Configuration: flags, then TASKORCH_* environment variables, then these defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TASKORCH_", extra="ignore")

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis to queue in; rediss:// for TLS.",
    )
    # Kept apart from the URL so a password can come from a Secret (the Helm chart does this).
    redis_password: SecretStr | None = Field(
        default=None, description="Redis password, when the URL carries none."
    )
    redis_username: str | None = Field(
        default=None,
        description="Redis ACL user, when the URL carries none (a namespace's user under "
        "redis.acl: the Secret taskorch-redis-user).",
    )
    redis_acl: bool = Field(
        default=False,
        description="Operator: give every namespace it serves a Redis ACL user limited to that "
        "namespace's keys, and a Secret taskorch-redis-user with its password there.",
    )
    redis_tls_ca_file: str | None = Field(
        default=None, description="CA bundle that signs the Redis server's TLS certificate."
    )
    redis_cluster: bool = Field(
        default=False,
        description="Connect to a Redis Cluster (every queue's keys live in one slot); also "
        "chosen by a redis+cluster:// or rediss+cluster:// URL.",
    )
    redis_socket_timeout: float = Field(
        default=10.0,
        gt=1,
        description="Seconds a Redis call may take before it fails: a silent connection (a "
        "partition, a vanished primary) must not hang a heartbeat.",
    )
    namespace: str = Field(default="default", description="Kubernetes namespace of the queues.")
    lease_seconds: float = Field(default=30.0, gt=0, description="Lease on a running attempt.")
    idempotency_ttl_seconds: int = Field(default=86_400, ge=1, description="Keys held this long.")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="text, or json: one object a line with time, level, logger, message, and "
        "task_id and trace_id for lines logged while a task runs.",
    )
    queue_status_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How often TaskQueue status (depth, age, rate) is refreshed.",
    )
    resync_seconds: float = Field(
        default=30.0, gt=0, description="How often the operator rechecks quiet in-flight Tasks."
    )
    leader_election: bool = Field(
        default=False,
        description="Run as one of several operator replicas: only the holder of a Lease acts, "
        "the others wait as hot standbys (the Helm chart turns this on).",
    )
    leader_election_namespace: str | None = Field(
        default=None,
        description="Namespace of the Lease; default: the pod's own (POD_NAMESPACE, or its "
        "ServiceAccount's).",
    )
    leader_election_lease: str = Field(
        default="taskorch-operator", description="Name of the Lease the replicas compete for."
    )
    leader_lease_seconds: float = Field(
        default=15.0,
        ge=3,
        description="How long a silent leader keeps the Lease: a standby takes over this long "
        "after the last renewal. The leader renews every 2/15 of it and gives up after 2/3.",
    )
    container_tasks: bool = Field(
        default=False,
        description="Operator: run Tasks and Workflow steps that have spec.container as one "
        "Kubernetes Job per attempt. Needs RBAC on jobs and pods (the chart's "
        "operator.containerTasks.enabled gives both); off, such Tasks fail with reason "
        "ContainerTasksDisabled.",
    )
    container_concurrency: int = Field(
        default=100,
        ge=1,
        description="Operator: container tasks of one namespace whose Jobs run at once (a "
        "TaskQueue named taskorch.jobs can set a lower cap, a rate limit, or pause them).",
    )
    container_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Operator: how often the running container tasks' Jobs and pods are listed "
        "(two list calls per namespace, however many run).",
    )
    image_pull_grace_seconds: float = Field(
        default=120.0,
        gt=0,
        description="Operator: how long a container task's pod may wait in ImagePullBackOff or "
        "CreateContainerConfigError before the attempt fails (retried per the task's policy).",
    )
    server_history_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Server: how often the dashboard samples each queue's counters for its "
        "throughput and failure charts (the last 120 samples are kept in memory).",
    )
