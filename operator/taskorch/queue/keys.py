"""Every Redis key name, in one place. Its twin is the `key` table of `lua/common.lua`, and
tests/with_redis/test_keys.py holds the two together.

Every key of one (namespace, queue) shares the hash tag `{ns/queue}`, so each script touches one
slot and the model runs unchanged on Redis Cluster.
"""

from __future__ import annotations

ROOT = "taskorch"
# Every (namespace, queue) that has ever been enqueued to, so the operator and the CLI can find
# the streams and queues without a SCAN. Outside every queue's slot: never written by a script.
QUEUES = f"{ROOT}:queues"

# The per-queue keys without a parameter; each is also a function below.
FIXED = (
    "delayed",  # sorted set: id by due time (runAt, retry backoff, hand-back)
    "active",  # sorted set: id by lease deadline
    "dead",  # sorted set: id by dead-letter time (the DLQ)
    "done",  # sorted set: the latest succeeded or cancelled ids by finish time (capped)
    "marker",  # list: wake-ups for blocked workers
    "events",  # stream: state changes of CR-backed tasks, for the operator's status writer
    "stats",  # hash: counters
    "config",  # hash: the queue's policy from its TaskQueue (queue/policy.py)
    "rate",  # hash: the rate limit's token bucket (tokens, ms)
    "registered",  # string: present once the queue is in QUEUES
)


def prefix(namespace: str, queue: str) -> str:
    return f"{ROOT}:{{{namespace}/{queue}}}:"


def task(namespace: str, queue: str, task_id: str) -> str:
    return f"{prefix(namespace, queue)}t:{task_id}"


def ready(namespace: str, queue: str, priority: int) -> str:
    return f"{prefix(namespace, queue)}ready:{priority}"


def unique(namespace: str, queue: str, idempotency_key: str) -> str:
    return f"{prefix(namespace, queue)}u:{idempotency_key}"


def ck_waiting(namespace: str, queue: str, concurrency_key: str) -> str:
    """The FIFO list of a concurrency key's tasks waiting for a slot."""
    return f"{prefix(namespace, queue)}ck:{concurrency_key}"


def ck_admitted(namespace: str, queue: str, concurrency_key: str) -> str:
    """How many of a concurrency key's tasks hold a slot (ready, running or retrying)."""
    return f"{prefix(namespace, queue)}ckn:{concurrency_key}"


def workflow(namespace: str, uid: str) -> str:
    """A Workflow's recorded decisions (the spec first seen, `when` answers, `forEach` items,
    steps that could not start); written and read by the operator only, outside every queue's
    slot (its steps may be on several queues)."""
    return f"{ROOT}:{{{namespace}}}:wf:{uid}"


def worker(namespace: str, name: str) -> str:
    """A worker's presence (pod, queues, slots, running, quiesced), refreshed every few seconds
    and expiring with it; the scaler's `stop` mark. Outside every queue's slot (a worker serves
    several queues), in its namespace's slot."""
    return f"{ROOT}:{{{namespace}}}:w:{name}"


def workers(namespace: str) -> str:
    """Sorted set: the namespace's workers by last presence (ms)."""
    return f"{ROOT}:{{{namespace}}}:workers"


def delayed(namespace: str, queue: str) -> str:
    return f"{prefix(namespace, queue)}delayed"


def active(namespace: str, queue: str) -> str:
    return f"{prefix(namespace, queue)}active"


def dead(namespace: str, queue: str) -> str:
    return f"{prefix(namespace, queue)}dead"


def done(namespace: str, queue: str) -> str:
    return f"{prefix(namespace, queue)}done"


def marker(namespace: str, queue: str) -> str:
    return f"{prefix(namespace, queue)}marker"


def events(namespace: str, queue: str) -> str:
    return f"{prefix(namespace, queue)}events"


def stats(namespace: str, queue: str) -> str:
    return f"{prefix(namespace, queue)}stats"


def config(namespace: str, queue: str) -> str:
    return f"{prefix(namespace, queue)}config"


def rate(namespace: str, queue: str) -> str:
    return f"{prefix(namespace, queue)}rate"


def registered(namespace: str, queue: str) -> str:
    return f"{prefix(namespace, queue)}registered"


def queue_ref(namespace: str, queue: str) -> str:
    """`ns/queue`, as stored in QUEUES."""
    return f"{namespace}/{queue}"


def split_queue_ref(ref: str) -> tuple[str, str]:
    namespace, _, queue = ref.partition("/")
    return namespace, queue
