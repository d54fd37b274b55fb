"""What kopf timers and daemons would do, without their finalizers: a periodic resync of
in-flight Tasks against Redis, and deletion of finished Tasks after ttlSecondsAfterFinished.

kopf puts a finalizer on every object a timer or daemon serves, and a finalizer makes a Task
undeletable while the operator is down (a namespace hangs in Terminating, the CRD cannot be
removed after `helm uninstall`). So the Tasks are followed from the watch events (`observe`,
called by controller/task_watch.py) and served by one background loop and per-Task TTL timers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from taskorch.api.task import TERMINAL_PHASES, task_queue
from taskorch.controller.expiry import Expiries
from taskorch.controller.kube import KubeAPI
from taskorch.controller.status import task_status
from taskorch.queue.broker import Broker

log = logging.getLogger("taskorch.tracker")
TERMINAL = {p.value for p in TERMINAL_PHASES}


class Reenqueue(Protocol):
    async def __call__(self, spec: dict[str, Any], meta: dict[str, Any], namespace: str) -> None:
        """Enqueue the Task again (idempotent: the UID is the task id)."""


@dataclass
class InFlight:
    """What the resync needs of an in-flight Task; not its spec, whose payload may be large."""

    namespace: str
    name: str
    queue: str
    phase: str | None
    attempts: int | None
    seen: float  # monotonic time of the last watch event


class Tracker:
    def __init__(
        self, broker: Broker, kube: KubeAPI, reenqueue: Reenqueue, *, resync_seconds: float = 30.0
    ) -> None:
        self.broker = broker
        self.kube = kube
        self.reenqueue = reenqueue
        self.resync_seconds = resync_seconds
        self.in_flight: dict[str, InFlight] = {}
        self.expiries = Expiries(kube, "tasks")

    def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        """Follow one watch event of a Task (type None is the initial listing)."""
        meta, spec, status = body["metadata"], body.get("spec", {}), body.get("status") or {}
        uid, namespace = meta["uid"], meta["namespace"]
        if event_type == "DELETED":
            self.in_flight.pop(uid, None)
            self.expiries.forget(uid)
            return
        phase = status.get("phase")
        # Back from terminal (requeued from the DLQ): its TTL no longer runs.
        self.expiries.follow(body, finished=phase in TERMINAL)
        if phase in TERMINAL:
            self.in_flight.pop(uid, None)
        elif not spec.get("suspend"):
            self.in_flight[uid] = InFlight(
                namespace,
                meta["name"],
                task_queue(spec),
                phase,
                status.get("attempts"),
                time.monotonic(),
            )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.resync_seconds)
            quiet_since = time.monotonic() - self.resync_seconds
            for uid, task in list(self.in_flight.items()):
                if task.seen <= quiet_since:
                    try:
                        await self._resync(uid, task)
                    except Exception:  # one Task's trouble must not stop the others' resync
                        log.exception("resync of %s/%s failed", task.namespace, task.name)

    async def _resync(self, uid: str, task: InFlight) -> None:
        """Safety net for a lost stream entry or lost Redis data: re-read the record, or
        enqueue again. Quiet Tasks only: a busy one is being written by the status writer."""
        info = await self.broker.get(task.namespace, task.queue, uid)
        if info is None:
            body = await self.kube.get("tasks", task.namespace, task.name)
            if body is None or body["metadata"]["uid"] != uid:
                return  # deleted meanwhile
            log.warning(
                "task %s/%s is missing from redis: enqueueing it again", task.namespace, task.name
            )
            await self.reenqueue(body["spec"], body["metadata"], task.namespace)
            return
        fresh = task_status(info, info.generation)
        if fresh["phase"] != task.phase or fresh["attempts"] != task.attempts:
            await self.kube.patch_status("tasks", task.namespace, task.name, uid, fresh)
