"""The hot path of the Redis data model (enqueue, claim, settle, extend, cancel), used by the
SDK, the workers and the operator. Reads for people and dashboards are in `inspect.py`."""

from __future__ import annotations

import itertools
import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from redis.exceptions import RedisError

from taskorch.errors import InvalidTask
from taskorch.queue import keys
from taskorch.queue.connection import RedisClient, connect
from taskorch.queue.model import (
    MAX_PAYLOAD_BYTES,
    Claimed,
    ClaimResult,
    Settlement,
    TaskInfo,
    TaskRef,
    TaskRequest,
    dumps,
    size_in_bytes,
    text,
)
from taskorch.queue.policy import DEFAULTS, QueuePolicy
from taskorch.queue.scripts import Scripts
from taskorch.settings import Settings

CLAIM_FIELDS = 11  # per claimed task in settle_claim's reply
log = logging.getLogger("taskorch.queue")


def _shared_fields(r: TaskRequest) -> tuple[Any, ...]:
    """What enqueue.lua stores once per group: everything but id, payload and idempotency key."""
    return (
        r.type,
        r.priority,
        int(r.retry.get("maxAttempts", 3)) if r.retry else 0,
        dumps(r.retry) if r.retry else "",
        int(r.timeout * 1000) if r.timeout else 0,
        int(r.run_at * 1000) if r.run_at else 0,
        int(r.delay * 1000) if r.delay else 0,
        int(r.deadline * 1000) if r.deadline else 0,
        "1" if r.notify else "0",
        r.cr_name,
        r.generation,
        dumps(list(r.redact)) if r.redact else "",
        r.workflow,
        r.concurrency_key,
        r.max_concurrent if r.concurrency_key else "",
        r.traceparent,
    )


class Broker:
    def __init__(self, redis: RedisClient, settings: Settings | None = None) -> None:
        self.redis = redis
        self.settings = settings or Settings()
        self.scripts = Scripts(redis)

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None, **kw: Any) -> Broker:
        settings = settings or Settings()
        return cls(connect(url, settings, **kw), settings)

    async def close(self) -> None:
        await self.redis.aclose()

    async def enqueue_many(
        self, namespace: str, queue: str, requests: Sequence[TaskRequest]
    ) -> list[str]:
        """Enqueue in one round trip; returns each task's id (the one already there when the id
        or the idempotency key is taken).

        Consecutive requests that share everything but id, payload and idempotency key travel
        as one group, so the common SDK batch (one type, one policy) costs 3 values a task."""
        s = self.settings
        argv: list[Any] = []
        for shared, group in itertools.groupby(requests, key=_shared_fields):
            tasks: list[Any] = []
            for r in group:
                if not 0 <= r.priority <= 9:  # a ready:<p> list no claim reads would hide it
                    raise InvalidTask(f"priority {r.priority} is outside 0-9")
                payload = dumps(r.payload)
                if (size := size_in_bytes(payload)) > MAX_PAYLOAD_BYTES:
                    raise InvalidTask(f"payload is {size} bytes as JSON, over {MAX_PAYLOAD_BYTES}")
                tasks += [r.id or uuid.uuid4().hex, payload, r.idempotency_key or ""]
            (type_, prio, max_attempts, policy, timeout_ms, due, delay, deadline, *rest) = shared
            notify, cr, gen, redact, workflow, ck, ckmax, tp = rest
            argv += [len(tasks) // 3, type_, prio, max_attempts, policy, timeout_ms, due, delay]
            argv += [deadline, s.idempotency_ttl_seconds * 1000, notify, cr]
            argv += [DEFAULTS.result_retention_seconds, gen, redact, workflow, ck, ckmax, tp]
            argv += tasks
        unregistered, ids = await self.scripts.enqueue(
            keys=[keys.prefix(namespace, queue)], args=argv
        )
        if unregistered:
            await self._register(namespace, queue)
        return [text(i) for i in ids]

    async def _register(self, namespace: str, queue: str) -> None:
        """Add the queue to the registry the operator and the CLI read. The registry lives outside
        the queue's slot (Redis Cluster), so the script cannot write it; the queue's own
        `registered` key is set only after the SADD landed, so a failed SADD is retried by the
        next enqueue instead of leaving the queue unseen for ever."""
        try:
            await self.redis.sadd(keys.QUEUES, keys.queue_ref(namespace, queue))
            await self.redis.set(keys.registered(namespace, queue), "1")
        except RedisError as e:
            # The tasks are enqueued: raising would make a caller enqueue them again.
            log.warning(
                "could not register queue %s/%s (the next enqueue will): %s", namespace, queue, e
            )

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
        Returns the ids whose settlement the fence rejected, the claimed attempts and how long
        until the next delayed task falls due (ms, None when there is none)."""
        lease_ms = int((lease_seconds or self.settings.lease_seconds) * 1000)
        argv: list[Any] = [worker, lease_ms, n, *DEFAULTS.limits()]
        for st in settlements:
            argv += st.argv()
        rejected, flat, next_due, queue_retry = await self.scripts.settle_claim(
            keys=[keys.prefix(namespace, queue)], args=argv
        )
        claimed = []
        for i in range(0, len(flat), CLAIM_FIELDS):
            f = [text(v) for v in flat[i : i + CLAIM_FIELDS]]
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
                    redact=tuple(json.loads(f[9])) if f[9] else (),
                    traceparent=f[10],
                )
            )
        due = int(next_due) if next_due not in (None, b"", "") else None
        default_retry = json.loads(queue_retry) if queue_retry else None
        return ClaimResult([text(r) for r in rejected], claimed, due, default_retry)

    async def extend(
        self,
        namespace: str,
        queue: str,
        leases: Sequence[tuple[str, str, str]],
        lease_seconds: float,
    ) -> tuple[list[str], list[str]]:
        """Renew (id, fence, progress JSON or "") leases in one call, storing progress while the
        lease is still ours; returns (lost ids, ids whose cancellation was requested)."""
        argv: list[Any] = [int(lease_seconds * 1000), *DEFAULTS.limits()]
        for lease in leases:
            argv += lease
        lost, cancels = await self.scripts.extend(keys=[keys.prefix(namespace, queue)], args=argv)
        return [text(i) for i in lost], [text(i) for i in cancels]

    async def cancel(
        self, namespace: str, queue: str, task_id: str, generation: int | None = None
    ) -> str | None:
        """Cancel a task; returns the state it was in, None when Redis has no such task."""
        state = await self.scripts.cancel(
            keys=[keys.prefix(namespace, queue)],
            args=[task_id, "" if generation is None else generation],
        )
        return text(state) if state else None

    async def requeue_dead(self, namespace: str, queue: str, ids: Sequence[str]) -> list[str]:
        if not ids:
            return []
        revived = await self.scripts.requeue(keys=[keys.prefix(namespace, queue)], args=ids)
        return [text(i) for i in revived]

    async def purge_dead(self, namespace: str, queue: str) -> int:
        return int(await self.scripts.purge(keys=[keys.prefix(namespace, queue)], args=[]))

    async def delete_finished(self, namespace: str, queue: str, task_id: str) -> bool:
        """Delete a task that has ended, with its data; False when it has not (or is gone)."""
        deleted = await self.scripts.delete(keys=[keys.prefix(namespace, queue)], args=[task_id])
        return bool(deleted)

    async def get(self, namespace: str, queue: str, task_id: str) -> TaskInfo | None:
        return (await self.get_many([TaskRef(namespace, queue, task_id)]))[0]

    async def get_many(self, refs: Sequence[TaskRef]) -> list[TaskInfo | None]:
        """Tasks by reference, in one pipelined round trip; None for a task Redis does not have."""
        async with self.redis.pipeline(transaction=False) as p:
            for ns, q, task_id in refs:
                p.hgetall(keys.task(ns, q, task_id))
            raws = await p.execute()
        out: list[TaskInfo | None] = []
        for (ns, q, task_id), raw in zip(refs, raws, strict=True):
            h = {text(k): text(v) for k, v in raw.items()}
            out.append(TaskInfo.from_hash(ns, q, task_id, h) if h else None)
        return out

    async def configure(
        self, namespace: str, queue: str, policy: QueuePolicy | None, owner: str = ""
    ) -> None:
        """Write the queue's policy into its `config` hash; None: defaults. `owner` names the
        TaskQueue (uid) it came from."""
        config = policy.config() if policy else {}
        if policy and owner:
            config["owner"] = owner
        argv = [v for item in config.items() for v in item]
        await self.scripts.configure(keys=[keys.prefix(namespace, queue)], args=argv)

    async def config(self, namespace: str, queue: str) -> dict[str, str]:
        raw = await self.redis.hgetall(keys.config(namespace, queue))
        return {text(k): text(v) for k, v in raw.items()}

    async def pause(self, namespace: str, queue: str) -> None:
        await self.scripts.set_paused(keys=[keys.prefix(namespace, queue)], args=["1"])

    async def resume(self, namespace: str, queue: str) -> None:
        await self.scripts.set_paused(keys=[keys.prefix(namespace, queue)], args=["0"])
