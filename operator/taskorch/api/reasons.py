"""Every condition reason a user can `kubectl wait` on or alert on, in one place. The queue's
Lua scripts write some of them (DeadlineExceeded, LostWorkerLimit, MaxAttemptsExceeded) besides
the reason a worker sends; tests/with_redis/test_keys.py checks the scripts name no other.
A handler's own `NonRetryable(reason)` is passed through as written."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # Succeeded=Unknown while the task is on its way (the phase is the reason; a Pending Task
    # says why it waits: Suspended, PayloadFrom…, or QueueUnavailable's RedisUnreachable)
    Queued = "Queued"
    Scheduled = "Scheduled"
    Running = "Running"
    Retrying = "Retrying"
    Suspended = "Suspended"
    # Succeeded=True
    Succeeded = "Succeeded"
    # refused by the operator before the queue (phase Failed)
    InvalidSpec = "InvalidSpec"
    PayloadTooLarge = "PayloadTooLarge"
    # waiting before the queue (phase Pending)
    PayloadFromMissing = "PayloadFromMissing"
    PayloadFromForbidden = "PayloadFromForbidden"
    RedisUnreachable = "RedisUnreachable"  # the QueueUnavailable condition
    # ended without running
    Cancelled = "Cancelled"
    Duplicate = "Duplicate"  # another task holds the idempotencyKey (phase Skipped)
    # dead-lettered by a worker or the queue (phase DeadLettered)
    MaxAttemptsExceeded = "MaxAttemptsExceeded"
    NonRetryableError = "NonRetryableError"
    UnknownTaskType = "UnknownTaskType"
    InvalidPayload = "InvalidPayload"
    InvalidRetryPolicy = "InvalidRetryPolicy"
    ResultNotSerializable = "ResultNotSerializable"
    ResultTooLarge = "ResultTooLarge"
    SettlementRefused = "SettlementRefused"
    DeadlineExceeded = "DeadlineExceeded"
    LostWorkerLimit = "LostWorkerLimit"
    CommandNotAllowed = "CommandNotAllowed"  # outside the worker's --allow-commands
    CommandNotFound = "CommandNotFound"  # no such executable on the worker
    # container tasks: refused by the operator (phase Failed) or dead-lettered at once
    ContainerTasksDisabled = "ContainerTasksDisabled"
    InvalidImage = "InvalidImage"
    # a failed attempt that will be retried (lastError.reason): a handler's error, or what
    # Kubernetes reported of a container task's pod (controller/job_outcome.py)
    HandlerError = "HandlerError"
    ContainerFailed = "ContainerFailed"
    OOMKilled = "OOMKilled"
    ImagePullBackOff = "ImagePullBackOff"
    ContainerConfigError = "ContainerConfigError"
    PodEvicted = "PodEvicted"
    JobFailed = "JobFailed"
    JobDeleted = "JobDeleted"
    # TaskQueue Ready condition (False: InvalidSpec or RedisUnreachable)
    Configured = "Configured"
    # WorkerPool: MetricsAvailable (False: RedisUnreachable), ScalingActive (False: ExternalOwner,
    # DeploymentNotFound, InvalidSpec)
    MetricsAvailable = "MetricsAvailable"
    Scaling = "Scaling"
    ExternalOwner = "ExternalOwner"
    DeploymentNotFound = "DeploymentNotFound"
