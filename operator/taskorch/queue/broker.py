"""The async client of the Redis data model, used by the SDK, the workers and the operator."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis

from taskorch.queue import keys
from taskorch.queue.model import (
    Claimed,
    ClaimResult,
    Settlement,
    TaskInfo,
    TaskRequest,
    dumps,
    now_ms,
)
from taskorch.queue.scripts import Scripts
from taskorch.settings import Settings

PRIORITIES = range(9, -1, -1)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _shared_fields(r: TaskRequest) -> tuple[Any, ...]:
    """What enqueue.lua stores once per group: everything but id, payload and idempotency key."""
    return (
        r.type,
        r.priority,
        int(r.retry.get("maxAttempts", 3)) if r.retry else 0,
        dumps(r.retry) if r.retry else "",
        int(r.timeout * 1000) if r.timeout else 0,
        int(r.run_at * 1000) if r.run_at else 0,
        int(r.deadline * 1000) if r.deadline else 0,
        "1" if r.notify else "0",
        r.cr_name,
        r.generation,
    )


class Broker:
    def __init__(self, redis: aioredis.Redis, settings: Settings | None = None) -> None:
        self.redis = redis
        self.settings = settings or Settings()
        self.scripts = Scripts(redis)

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None, **kw: Any) -> Broker:
        """A broker on `url`, with the password and TLS CA of `settings` when they are set."""
        settings = settings or Settings()
        if settings.redis_password is not None:
            kw.setdefault("password", settings.redis_password.get_secret_value())
        if settings.redis_tls_ca_file:
            kw.setdefault("ssl_ca_certs", settings.redis_tls_ca_file)
        return cls(aioredis.Redis.from_url(url, **kw), settings)

    async def close(self) -> None:
        await self.redis.aclose()

    async def enqueue_many(
        self, namespace: str, queue: str, requests: Sequence[TaskRequest]
    ) -> list[str]:
        """Enqueue in one round trip; returns each task's id (an existing one on a duplicate).

        Consecutive requests that share everything but id, payload and idempotency key travel
        as one group, so the common SDK batch (one type, one policy) costs 3 values a task."""
        s = self.settings
        ukey_ttl = s.idempotency_ttl_seconds * 1000
        argv: list[Any] = [now_ms()]
        for shared, group in itertools.groupby(requests, key=_shared_fields):
            tasks: list[Any] = []
            for r in group:
                tasks += [
                    r.id or uuid.uuid4().hex,
                    dumps(r.payload),
                    r.idempotency_key or "",
                ]
            type_, prio, max_attempts, policy, timeout_ms, due, deadline_ms, notify, cr, gen = (
                shared
            )
            argv += [
                len(tasks) // 3,
                type_,
                prio,
                max_attempts,
                policy,
                timeout_ms,
                due,
                deadline_ms,
                ukey_ttl,
                notify,
                cr,
                s.result_retention_seconds,
                gen,
                *tasks,
            ]
        new_queue, ids = await self.scripts.enqueue(keys=[keys.prefix(namespace, queue)], args=argv)
        if new_queue:
            # The registry lives outside the queue's hash slot (Redis Cluster), so the script
            # cannot write it; it says when the queue is new (or Redis lost its data) instead.
            await self.redis.sadd(keys.QUEUES, f"{namespace}/{queue}")
        return [_s(i) for i in ids]

    async def settle_claim(
        self,
        namespace: str,
        queue: str,
        worker: str,
        settlements: Iterable[Settlement],
        n: int,
        lease_seconds: float | None = None,
    ) -> ClaimResult:
        """Settle finished attempts and claim up to `n` more, atomically, in one round trip.
        Returns the ids whose settlement the fence rejected, the claimed attempts and when the
        next delayed task falls due (epoch ms, None when there is none)."""
        s = self.settings
        lease_ms = int((lease_seconds or s.lease_seconds) * 1000)
        argv: list[Any] = [now_ms(), worker, lease_ms, n, s.max_recoveries, s.dlq_cap, 1]
        for st in settlements:
            argv += st.argv()
        rejected, flat, next_due = await self.scripts.settle_claim(
            keys=[keys.prefix(namespace, queue)], args=argv
        )
        claimed = []
        for i in range(0, len(flat), 9):
            f = [_s(v) for v in flat[i : i + 9]]
            claimed.append(
                Claimed(
                    id=f[0],
                    fence=f[1],
                    attempt=int(f[2]),
                    failures=int(f[3] or 0),
                    max_attempts=int(f[4] or 0),
                    type=f[5],
                    payload=f[6],
                    policy=json.loads(f[7]) if f[7] else None,
                    timeout=int(f[8]) / 1000 if f[8] and f[8] != "0" else None,
                )
            )
        return ClaimResult(
            [_s(r) for r in rejected], claimed, int(float(next_due)) if next_due else None
        )

    async def extend(
        self,
        namespace: str,
        queue: str,
        leases: Sequence[tuple[str, str, str]],
        lease_seconds: float,
    ) -> tuple[list[str], list[str]]:
        """Renew (id, fence, progress JSON or "") leases in one call, storing progress while the
        lease is still ours; returns (lost ids, ids whose cancellation was requested)."""
        argv: list[Any] = [now_ms(), int(lease_seconds * 1000)]
        for lease in leases:
            argv += lease
        lost, cancels = await self.scripts.extend(keys=[keys.prefix(namespace, queue)], args=argv)
        return [_s(i) for i in lost], [_s(i) for i in cancels]

    async def cancel(self, namespace: str, queue: str, task_id: str) -> str | None:
        """Cancel a task; returns the state it was in, None when unknown."""
        state = await self.scripts.cancel(
            keys=[keys.prefix(namespace, queue)], args=[task_id, now_ms()]
        )
        return _s(state) if state else None

    async def requeue_dead(self, namespace: str, queue: str, ids: Sequence[str]) -> list[str]:
        revived = await self.scripts.requeue(
            keys=[keys.prefix(namespace, queue)], args=[now_ms(), *ids]
        )
        return [_s(i) for i in revived]

    async def dead_ids(self, namespace: str, queue: str, limit: int = 100) -> list[str]:
        ids = await self.redis.zrange(f"{keys.prefix(namespace, queue)}dead", 0, limit - 1)
        return [_s(i) for i in ids]

    async def purge_dead(self, namespace: str, queue: str) -> int:
        dead = f"{keys.prefix(namespace, queue)}dead"
        ids = await self.dead_ids(namespace, queue, limit=1_000_000)
        async with self.redis.pipeline(transaction=True) as p:
            for task_id in ids:
                p.delete(keys.task(namespace, queue, task_id))
            p.delete(dead)
            await p.execute()
        return len(ids)

    async def get(self, namespace: str, queue: str, task_id: str) -> TaskInfo | None:
        raw = await self.redis.hgetall(keys.task(namespace, queue, task_id))
        if not raw:
            return None
        h = {_s(k): _s(v) for k, v in raw.items()}
        return TaskInfo.from_hash(namespace, queue, task_id, h)

    async def get_many(self, refs: Sequence[tuple[str, str, str]]) -> list[TaskInfo | None]:
        """(namespace, queue, id) triples in one pipelined round trip."""
        async with self.redis.pipeline(transaction=False) as p:
            for ns, q, task_id in refs:
                p.hgetall(keys.task(ns, q, task_id))
            raws = await p.execute()
        out: list[TaskInfo | None] = []
        for (ns, q, task_id), raw in zip(refs, raws, strict=True):
            h = {_s(k): _s(v) for k, v in raw.items()}
            out.append(TaskInfo.from_hash(ns, q, task_id, h) if h else None)
        return out

    async def pause(self, namespace: str, queue: str) -> None:
        await self.redis.set(f"{keys.prefix(namespace, queue)}paused", "1")

    async def resume(self, namespace: str, queue: str) -> None:
        p = keys.prefix(namespace, queue)
        await self.redis.delete(f"{p}paused")
        await self.redis.rpush(f"{p}marker", "1")  # wake the workers that were held

    async def queues(self) -> list[tuple[str, str]]:
        refs = sorted(_s(r) for r in await self.redis.smembers(keys.QUEUES))
        return [keys.split_queue_ref(r) for r in refs]

    async def depth(self, namespace: str, queue: str) -> dict[str, Any]:
        """Backlog, in-flight, delayed, dead, paused and the oldest ready task's age."""
        p = keys.prefix(namespace, queue)
        async with self.redis.pipeline(transaction=False) as pipe:
            for prio in PRIORITIES:
                pipe.llen(f"{p}ready:{prio}")
            pipe.zcard(f"{p}active")
            pipe.zcard(f"{p}delayed")
            pipe.zcard(f"{p}dead")
            pipe.exists(f"{p}paused")
            for prio in PRIORITIES:
                pipe.lindex(f"{p}ready:{prio}", 0)
            res = await pipe.execute()
        n = len(PRIORITIES)
        heads = [_s(h) for h in res[n + 4 :] if h]
        oldest_ms: int | None = None
        if heads:
            async with self.redis.pipeline(transaction=False) as pipe:
                for h in heads:
                    pipe.hget(keys.task(namespace, queue, h), "created_ms")
                created = [int(c) for c in await pipe.execute() if c]
            oldest_ms = min(created) if created else None
        return {
            "ready": sum(res[:n]),
            "active": res[n],
            "delayed": res[n + 1],
            "dead": res[n + 2],
            "paused": bool(res[n + 3]),
            "oldest_ready_age_s": (now_ms() - oldest_ms) / 1000 if oldest_ms else None,
        }
