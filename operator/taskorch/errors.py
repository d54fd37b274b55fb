"""taskorch's own errors, under one base class (so `except taskorch.TaskorchError` catches
them all and nothing else)."""

from __future__ import annotations

from typing import Any


class TaskorchError(Exception):
    """Base of every error taskorch raises on purpose."""


class InvalidTask(TaskorchError, ValueError):
    """A task the SDK refuses to enqueue; the message names the field, the value and the limit."""


class TaskFailed(TaskorchError):
    """`Client.wait()` on a task that ended dead-lettered or cancelled; `.info` has its record."""

    def __init__(self, info: Any) -> None:
        self.info = info
        err = info.error or {}
        super().__init__(
            f"task {info.id} ended {info.state}: {err.get('reason')}: {err.get('message')}"
        )


class NonRetryable(TaskorchError):
    """Raise from a handler to dead-letter the task at once with `reason`."""

    def __init__(self, reason: str, message: str = "", details: dict[str, Any] | None = None):
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message
        self.details = details or {}


class AttemptFailed(TaskorchError):
    """A failed attempt that names its own reason (lastError.reason, instead of HandlerError)
    and whose `details` (e.g. a container's last log lines) stand in for the traceback. Retried
    per the task's policy, like any other error."""

    reason: str = "HandlerError"

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.details = details


class Refused(TaskorchError):
    """A Task the operator can never enqueue as written: it fails with this reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Waiting(TaskorchError):
    """A Task the operator cannot enqueue yet (a missing or unreadable payloadFrom source): it
    stays Pending with this reason and is retried."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class LeasesLost(TaskorchError):
    """A worker could not renew its leases for longer than a lease: others may run its tasks now,
    so it stops (and its Deployment restarts it) rather than run them twice."""
