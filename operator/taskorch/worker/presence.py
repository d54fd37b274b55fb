"""A worker's presence in Redis, for the WorkerPool scaler: its pod (the downward API's
POD_NAME, else the hostname, which is the pod's name in Kubernetes), its queues and slots, how
many tasks it runs, and whether the scaler asked it to stop claiming (queue/workers.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from typing import TYPE_CHECKING

import redis.exceptions

from taskorch.queue import keys
from taskorch.queue.model import text
from taskorch.queue.workers import PRESENCE_SECONDS, PRESENCE_TTL_SECONDS

if TYPE_CHECKING:
    from taskorch.worker.runner import Worker

log = logging.getLogger("taskorch.worker")


def pod_name() -> str:
    return os.environ.get("POD_NAME") or socket.gethostname()


class Presence:
    def __init__(self, worker: Worker, pod: str | None = None) -> None:
        self.worker = worker
        self.pod = pod or pod_name()
        self.key = keys.worker(worker.namespace, worker.name)

    async def run(self) -> None:
        while True:
            try:
                await self.announce()
            except redis.exceptions.RedisError as e:
                log.debug("presence not written: %s", e)
            await asyncio.sleep(PRESENCE_SECONDS)

    async def announce(self) -> None:
        w = self.worker
        redis = w.broker.redis
        stop = text(await redis.hget(self.key, "stop") or b"")
        w.set_quiesced(bool(stop))
        idle = w.quiesced and not w.running and not w.claims_in_flight
        now_ms = int(time.time() * 1000)
        async with redis.pipeline(transaction=False) as p:
            p.hset(
                self.key,
                mapping={
                    "pod": self.pod,
                    "queues": ",".join(w.queues),
                    "concurrency": w.concurrency,
                    "running": len(w.running),
                    "quiesced": "1" if w.quiesced else "0",
                    "idle_ack": stop if idle else "",
                    "finished": w.finished,
                    "types": json.dumps(w.type_stats, separators=(",", ":")),
                    "ms": now_ms,
                },
            )
            p.pexpire(self.key, int(PRESENCE_TTL_SECONDS * 1000))
            p.zadd(keys.workers(w.namespace), {w.name: now_ms})
            p.zremrangebyscore(keys.workers(w.namespace), "-inf", now_ms - 60_000)
            await p.execute()

    async def leave(self) -> None:
        """Gone at once on a clean exit, not after the TTL."""
        redis = self.worker.broker.redis
        async with redis.pipeline(transaction=False) as p:
            p.delete(self.key)
            p.zrem(keys.workers(self.worker.namespace), self.worker.name)
            await p.execute()
