"""Redis key names. Every key of one (namespace, queue) shares the hash tag `{ns/queue}`, so each
script touches one slot and the model runs unchanged on Redis Cluster."""

from __future__ import annotations

ROOT = "taskorch"
# Every (namespace, queue) that has ever been enqueued to, so the operator and the CLI can find
# the streams and queues without a SCAN.
QUEUES = f"{ROOT}:queues"


def prefix(namespace: str, queue: str) -> str:
    return f"{ROOT}:{{{namespace}/{queue}}}:"


def task(namespace: str, queue: str, task_id: str) -> str:
    return f"{prefix(namespace, queue)}t:{task_id}"


def events(namespace: str, queue: str) -> str:
    return f"{prefix(namespace, queue)}events"


def marker(namespace: str, queue: str) -> str:
    return f"{prefix(namespace, queue)}marker"


def split_queue_ref(ref: str) -> tuple[str, str]:
    """`ns/queue` as stored in QUEUES."""
    namespace, _, queue = ref.partition("/")
    return namespace, queue
