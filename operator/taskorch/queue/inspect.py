"""The read model of the queues, apart from the hot path (asynq's inspector): typed queue stats
and pages of dead tasks, for the CLI, the operator's metrics and (later) the scaler and the
dashboard. Every read is bounded: pages, never full scans."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from taskorch.queue import keys
from taskorch.queue.broker import Broker
from taskorch.queue.model import TaskInfo, TaskRef, now_ms, text

PRIORITIES = range(9, -1, -1)
FINISHED_STATES = ("succeeded", "dead", "cancelled")  # the stats counters finish() increments
# Where tasks can be listed page by page: ready lists, the active, delayed and dead sets, and the
# capped index of recently finished (succeeded or cancelled) ones.
LISTABLE = ("queued", "active", "delayed", "dead", "done")


@dataclass(frozen=True, slots=True)
class QueueStats:
    namespace: str
    queue: str
    ready: int  # waiting to be claimed
    active: int  # running, leased by a worker
    delayed: int  # waiting for runAt, a retry backoff or a hand-back delay
    dead: int  # in the dead-letter queue
    paused: bool
    oldest_ready_age_s: float | None  # age of the oldest ready task
    finished: int = 0  # tasks that ever ended here (succeeded, dead, cancelled): for throughput

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Inspector:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.redis = broker.redis

    async def queues(self) -> list[tuple[str, str]]:
        """Every (namespace, queue) ever enqueued to, sorted."""
        refs = sorted(text(r) for r in await self.redis.smembers(keys.QUEUES))
        return [keys.split_queue_ref(r) for r in refs]

    async def queues_of(self, namespace: str) -> list[str]:
        """The queues of one namespace, sorted."""
        return [q for ns, q in await self.queues() if ns == namespace]

    async def stats(self, namespace: str, queue: str) -> QueueStats:
        """Backlog, in-flight, delayed, dead, paused and the oldest ready task's age."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for prio in PRIORITIES:
                pipe.llen(keys.ready(namespace, queue, prio))
            pipe.zcard(keys.active(namespace, queue))
            pipe.zcard(keys.delayed(namespace, queue))
            pipe.zcard(keys.dead(namespace, queue))
            pipe.hexists(keys.config(namespace, queue), "paused")
            pipe.hmget(keys.stats(namespace, queue), *FINISHED_STATES)
            for prio in PRIORITIES:
                pipe.lindex(keys.ready(namespace, queue, prio), 0)
            res = await pipe.execute()
        n = len(PRIORITIES)
        heads = [text(h) for h in res[n + 5 :] if h]
        oldest_ms: int | None = None
        if heads:
            async with self.redis.pipeline(transaction=False) as pipe:
                for h in heads:
                    pipe.hget(keys.task(namespace, queue, h), "created_ms")
                created = [int(c) for c in await pipe.execute() if c]
            oldest_ms = min(created) if created else None
        return QueueStats(
            namespace=namespace,
            queue=queue,
            ready=sum(res[:n]),
            active=res[n],
            delayed=res[n + 1],
            dead=res[n + 2],
            paused=bool(res[n + 3]),
            oldest_ready_age_s=(now_ms() - oldest_ms) / 1000 if oldest_ms else None,
            finished=sum(int(c or 0) for c in res[n + 4]),
        )

    async def due(self, namespace: str, queue: str) -> int:
        """Delayed tasks already due (runAt passed, retry backoff over): ready at the next claim."""
        return int(await self.redis.zcount(keys.delayed(namespace, queue), "-inf", now_ms()))

    async def all_stats(self) -> list[QueueStats]:
        return [await self.stats(ns, q) for ns, q in await self.queues()]

    async def dead_ids(
        self, namespace: str, queue: str, offset: int = 0, limit: int = 100
    ) -> list[str]:
        """A page of the DLQ, oldest first."""
        ids = await self.redis.zrange(keys.dead(namespace, queue), offset, offset + limit - 1)
        return [text(i) for i in ids]

    async def dead_ids_until(
        self, namespace: str, queue: str, until_ms: int, offset: int = 0, limit: int = 100
    ) -> list[str]:
        """A page of the ids dead-lettered at or before `until_ms`, oldest first: a snapshot
        that a task dying again later (with a later score) does not join."""
        ids = await self.redis.zrange(
            keys.dead(namespace, queue), "-inf", until_ms, byscore=True, offset=offset, num=limit
        )
        return [text(i) for i in ids]

    async def dead_tasks(
        self, namespace: str, queue: str, offset: int = 0, limit: int = 100
    ) -> list[TaskInfo]:
        ids = await self.dead_ids(namespace, queue, offset, limit)
        infos = await self.broker.get_many([TaskRef(namespace, queue, i) for i in ids])
        return [i for i in infos if i is not None]

    async def task_ids(
        self, namespace: str, queue: str, where: str, offset: int = 0, limit: int = 50
    ) -> tuple[list[str], int]:
        """A page of the ids in one of LISTABLE, and how many there are in all. Ready tasks come
        in claim order (highest priority first), the others newest first but `active` (by
        lease deadline) and `delayed` (soonest due first)."""
        if where == "queued":
            return await self._ready_ids(namespace, queue, offset, limit)
        key, newest_first = {
            "active": (keys.active(namespace, queue), False),
            "delayed": (keys.delayed(namespace, queue), False),
            "dead": (keys.dead(namespace, queue), True),
            "done": (keys.done(namespace, queue), True),
        }[where]
        async with self.redis.pipeline(transaction=False) as p:
            p.zcard(key)
            p.zrange(key, offset, offset + limit - 1, desc=newest_first)
            total, ids = await p.execute()
        return [text(i) for i in ids], int(total)

    async def _ready_ids(
        self, namespace: str, queue: str, offset: int, limit: int
    ) -> tuple[list[str], int]:
        async with self.redis.pipeline(transaction=False) as p:
            for prio in PRIORITIES:
                p.llen(keys.ready(namespace, queue, prio))
            lengths = await p.execute()
        total, ids = sum(lengths), list[str]()
        skip = offset
        for prio, length in zip(PRIORITIES, lengths, strict=True):
            if len(ids) >= limit:
                break
            if skip >= length:
                skip -= length
                continue
            want = limit - len(ids)
            page = await self.redis.lrange(
                keys.ready(namespace, queue, prio), skip, skip + want - 1
            )
            ids += [text(i) for i in page]
            skip = 0
        return ids, total

    async def tasks(
        self, namespace: str, queue: str, where: str, offset: int = 0, limit: int = 50
    ) -> tuple[list[TaskInfo], int]:
        """A page of tasks in one of LISTABLE (ids whose data expired are left out)."""
        ids, total = await self.task_ids(namespace, queue, where, offset, limit)
        infos = await self.broker.get_many([TaskRef(namespace, queue, i) for i in ids])
        return [i for i in infos if i is not None], total
