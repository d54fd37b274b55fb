"""pydantic models of every custom resource: the single source of truth for the CRD schemas."""

from taskorch.api.base import GROUP, VERSION, Condition
from taskorch.api.task import Priority, RetryPolicy, TaskPhase, TaskSpec, TaskStatus

__all__ = [
    "GROUP",
    "VERSION",
    "Condition",
    "Priority",
    "RetryPolicy",
    "TaskPhase",
    "TaskSpec",
    "TaskStatus",
]
