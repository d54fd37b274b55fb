"""Workers' presence as the scaler reads and marks it (the worker's side: worker/presence.py).

Drain-then-shrink (DESIGN §4 WorkerPool, step 5): the scaler marks an idle worker `stop=<mark>`;
the worker stops claiming and echoes the mark as `idle_ack` once it runs nothing and has no claim
in flight. Only acknowledged workers' pods get the lowest deletion cost before the Deployment
shrinks, so a busy worker is never the one removed. A cleared mark lets a worker claim again."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from taskorch.queue import keys
from taskorch.queue.connection import RedisClient
from taskorch.queue.model import text

PRESENCE_SECONDS = 2.0  # how often a worker refreshes its presence
PRESENCE_TTL_SECONDS = 3 * PRESENCE_SECONDS  # three missed refreshes: a dead worker's


@dataclass(frozen=True)
class WorkerPresence:
    """A worker as the scaler reads it."""

    name: str
    pod: str
    queues: tuple[str, ...]
    concurrency: int
    running: int
    quiesced: bool
    stop: str  # the scaler's mark, or ""
    idle_ack: str  # the mark the worker acknowledged, idle, or ""
    finished: int = 0  # attempts it ran to an end since it started
    heartbeat_ms: int = 0  # when it last wrote its presence
    # per task type since it started: (returned, raised, handler seconds)
    type_stats: dict[str, tuple[int, int, float]] = field(default_factory=dict)

    @property
    def drained(self) -> bool:
        """Marked, and acknowledged the mark with nothing running: safe to remove."""
        return bool(self.stop) and self.idle_ack == self.stop and self.running == 0


async def read_workers(redis: RedisClient, namespace: str) -> list[WorkerPresence]:
    """Every live worker of the namespace."""
    names = [text(n) for n in await redis.zrange(keys.workers(namespace), 0, -1)]
    if not names:
        return []
    async with redis.pipeline(transaction=False) as p:
        for n in names:
            p.hgetall(keys.worker(namespace, n))
        raws = await p.execute()
    out = []
    for name, raw in zip(names, raws, strict=True):
        f = {text(k): text(v) for k, v in raw.items()}
        if not f:
            continue  # expired: a dead worker
        out.append(
            WorkerPresence(
                name=name,
                pod=f.get("pod", ""),
                queues=tuple(q for q in f.get("queues", "").split(",") if q),
                concurrency=int(f.get("concurrency") or 0),
                running=int(f.get("running") or 0),
                quiesced=f.get("quiesced") == "1",
                stop=f.get("stop", ""),
                idle_ack=f.get("idle_ack", ""),
                finished=int(f.get("finished") or 0),
                heartbeat_ms=int(f.get("ms") or 0),
                type_stats=_type_stats(f.get("types")),
            )
        )
    return out


def _type_stats(raw: str | None) -> dict[str, tuple[int, int, float]]:
    try:
        data = json.loads(raw) if raw else {}
        return {str(t): (int(v[0]), int(v[1]), float(v[2])) for t, v in data.items()}
    except (ValueError, TypeError, IndexError, AttributeError):
        return {}  # an older or odd worker: no per-type figures from it


async def mark_stop(redis: RedisClient, namespace: str, names: Iterable[str], mark: str) -> None:
    """Ask these workers to stop claiming (quiesce) until the mark is cleared."""
    async with redis.pipeline(transaction=False) as p:
        for n in names:
            p.hset(keys.worker(namespace, n), "stop", mark)
            p.pexpire(keys.worker(namespace, n), int(PRESENCE_TTL_SECONDS * 1000))
        await p.execute()


async def clear_stop(redis: RedisClient, namespace: str, names: Iterable[str]) -> None:
    async with redis.pipeline(transaction=False) as p:
        for n in names:
            p.hdel(keys.worker(namespace, n), "stop")
        await p.execute()
