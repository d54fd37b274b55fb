"""taskorch: background tasks and DAG workflows as Kubernetes custom resources."""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from taskorch.client import Client
    from taskorch.errors import InvalidTask, NonRetryable, TaskFailed, TaskorchError
    from taskorch.worker.app import App, Context
    from taskorch.worker.retry import Retry

_EXPORTS = {
    "Client": "taskorch.client",
    "TaskFailed": "taskorch.errors",
    "InvalidTask": "taskorch.errors",
    "NonRetryable": "taskorch.errors",
    "TaskorchError": "taskorch.errors",
    "App": "taskorch.worker.app",
    "Context": "taskorch.worker.app",
    "Retry": "taskorch.worker.retry",
}


def __getattr__(name: str) -> Any:
    # Lazy, so `taskorch --version` and the operator do not import what they don't use.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)


__all__ = [
    "App",
    "Client",
    "Context",
    "InvalidTask",
    "NonRetryable",
    "Retry",
    "TaskFailed",
    "TaskorchError",
    "__version__",
]
