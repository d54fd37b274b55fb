"""What goes into and comes out of the queue scripts, as plain typed records."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

DEFAULT_PRIORITY = 5
MAX_PAYLOAD_BYTES = 64 * 1024  # a task's payload as JSON, from a CR or the SDK alike


class State(StrEnum):
    """A task's state in Redis (the operator maps it to the CR's phase)."""

    scheduled = "scheduled"
    queued = "queued"
    active = "active"
    retrying = "retrying"
    succeeded = "succeeded"
    dead = "dead"
    cancelled = "cancelled"


TERMINAL = frozenset({State.succeeded, State.dead, State.cancelled})


class Outcome(StrEnum):
    ok = "ok"
    retry = "retry"
    dead = "dead"
    cancelled = "cancelled"
    release = "release"  # handed back unfinished by a draining worker
    handback = "handback"  # refused by a worker without the handler: not an attempt


class TaskRef(NamedTuple):
    """Where a task lives: its namespace, queue and id."""

    namespace: str
    queue: str
    id: str


def text(value: Any) -> str:
    """A Redis reply value as str (replies are bytes unless the client decodes them)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def now_ms() -> int:
    return int(time.time() * 1000)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps(value: Any) -> str:
    """Compact JSON that Redis's cjson always accepts: a lone surrogate (an `os.fsdecode` of a
    non-UTF-8 file name in an error message) becomes U+FFFD instead of a `\\udcXX` escape that
    cjson refuses, which would abort a whole settlement batch."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    # isascii() is O(1) on CPython: the common case pays nothing.
    return text if text.isascii() else _LONE_SURROGATE.sub("\ufffd", text)


def size_in_bytes(text: str) -> int:
    """What `text` weighs in Redis (UTF-8), without encoding it in the common ASCII case."""
    return len(text) if text.isascii() else len(text.encode())


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """One task to enqueue. `retry` is the task's own policy (camelCase keys as in the CRD);
    None lets the handler's policy apply."""

    type: str
    payload: Any = None
    id: str | None = None
    priority: int = DEFAULT_PRIORITY
    retry: dict[str, Any] | None = None
    timeout: float | None = None
    run_at: float | None = None  # epoch seconds
    delay: float | None = None  # seconds from now on Redis's clock
    deadline: float | None = None  # epoch seconds
    idempotency_key: str | None = None
    notify: bool = False  # write state changes to the events stream (CR-backed tasks)
    cr_name: str = ""
    generation: int = 0  # the CR's metadata.generation, echoed as status.observedGeneration
    redact: tuple[str, ...] = ()  # payload fields (from Secrets) kept out of every error text
    workflow: str = ""  # "name/uid" of the Workflow this task is a step of
    concurrency_key: str = ""  # at most max_concurrent tasks of a key run at once, in order
    max_concurrent: int = 1
    traceparent: str = ""  # W3C trace context of the enqueue (tracing.py), "" when off


@dataclass(frozen=True, slots=True)
class Settlement:
    """A finished attempt, handed to settle_claim."""

    id: str
    fence: str
    outcome: Outcome
    data: str = ""  # result JSON for ok, error JSON otherwise
    delay_ms: int = 0  # the retry's backoff, counted on Redis's clock
    history: dict[str, Any] | None = None
    trace: str = ""  # the handler run's trace context, for the settle span (not sent to Redis)

    def argv(self) -> list[str | int]:
        hist = dumps(self.history) if self.history else ""
        return [self.id, self.fence, self.outcome.value, self.data, self.delay_ms, hist]


@dataclass(frozen=True, slots=True)
class Claimed:
    """An attempt a worker now holds a lease on."""

    id: str
    fence: str
    attempt: int
    failures: int
    max_attempts: int
    type: str
    payload: str
    policy: dict[str, Any] | None
    timeout: float | None
    redact: tuple[str, ...] = ()
    traceparent: str = ""  # the enqueue's trace context (tracing.py)


class ClaimResult(NamedTuple):
    """What one settle_claim round trip returns."""

    rejected: list[str]  # settlements the fence refused (a zombie's)
    claimed: list[Claimed]
    next_due_in_ms: int | None  # how long until the next delayed task or rate-limit token
    default_retry: dict[str, Any] | None = None  # the queue's TaskQueue defaultRetry


@dataclass(slots=True)
class TaskInfo:
    """A task as Redis holds it (SDK `get`, operator status)."""

    id: str
    namespace: str
    queue: str
    type: str
    state: State
    attempt: int
    failures: int
    payload: Any
    result: Any = None
    error: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    progress: Any = None  # the handler's latest ctx.progress() report, as of its last heartbeat
    owner: str | None = None
    created_ms: int | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    next_retry_ms: int | None = None
    cr_name: str = ""
    generation: int | None = None
    workflow: str = ""  # "name/uid" of the Workflow this task is a step of
    redact: tuple[str, ...] = ()  # payload fields resolved from Secrets: never shown

    @classmethod
    def from_hash(cls, namespace: str, queue: str, task_id: str, h: dict[str, str]) -> TaskInfo:
        def num(name: str) -> int | None:
            v = h.get(name)
            return int(v) if v else None

        def js(name: str) -> Any:
            v = h.get(name)
            return json.loads(v) if v else None

        return cls(
            id=task_id,
            namespace=namespace,
            queue=queue,
            type=h.get("type", ""),
            state=State(h.get("state", "queued")),
            attempt=num("attempt") or 0,
            failures=num("failures") or 0,
            payload=js("payload"),
            result=js("result"),
            error=js("error"),
            history=js("history") or [],
            progress=js("progress"),
            owner=h.get("owner"),
            created_ms=num("created_ms"),
            started_ms=num("started_ms"),
            finished_ms=num("finished_ms"),
            next_retry_ms=num("next_retry_ms"),
            cr_name=h.get("cr", ""),
            generation=num("gen"),
            workflow=h.get("wf", ""),
            redact=tuple(js("redact") or ()),
        )
