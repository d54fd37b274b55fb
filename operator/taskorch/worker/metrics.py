"""Prometheus metrics of a worker process."""

import functools
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

LABELS = ("queue", "type")
PROCESSED = Counter("taskorch_worker_tasks_succeeded", "Attempts that succeeded.", LABELS)
FAILED = Counter("taskorch_worker_tasks_failed", "Attempts that raised or timed out.", LABELS)
RETRIED = Counter("taskorch_worker_tasks_retried", "Failed attempts scheduled for retry.", LABELS)
DEAD = Counter("taskorch_worker_tasks_dead_lettered", "Tasks sent to the DLQ.", LABELS)
DURATION = Histogram(
    "taskorch_worker_task_duration_seconds",
    "Handler run time per attempt.",
    LABELS,
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800),
)
IN_FLIGHT = Gauge("taskorch_worker_in_flight", "Attempts running now.")
REFUSED = Counter(
    "taskorch_worker_tasks_handed_back",
    "Tasks handed back because this worker has no handler for their type.",
    LABELS,
)
HUNG_THREADS = Gauge(
    "taskorch_worker_hung_threads",
    "Threads still running sync handlers whose attempt timed out or was cancelled.",
)


@functools.lru_cache(maxsize=4096)
def on_success(queue: str, type_: str) -> tuple[Any, Any]:
    """The succeeded counter and the duration histogram of one (queue, type): looked up once,
    not per task (a labels() lookup costs as much as the rest of the bookkeeping)."""
    return PROCESSED.labels(queue, type_), DURATION.labels(queue, type_)
