"""Task admission from watch events: enqueue a new or released Task, hold a suspended one,
cancel one whose spec.cancel is set, and retry those waiting on payloadFrom or on Redis.

kopf's on.create / on.field handlers would do this too, but kopf then records each handled Task
in its annotations (a diff base, retry progress): one more API write per Task, the same again
as the status itself. Watch events need no record: what was done is read from the Task's own
status, and enqueueing is idempotent by UID, so handling an event twice (a restart, a retry
racing an event) enqueues nothing twice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.exceptions

from taskorch.api.reasons import Reason
from taskorch.api.task import TERMINAL_PHASES, task_queue
from taskorch.controller.container_tasks import delete_running_jobs
from taskorch.controller.job_runner import JobRunners
from taskorch.controller.kube import KubeAPI
from taskorch.controller.status import cancelled_status, pending_status
from taskorch.controller.tasks import admit
from taskorch.errors import Waiting
from taskorch.queue.broker import Broker
from taskorch.queue.model import TaskRequest, now_ms

log = logging.getLogger("taskorch.admission")
REDIS_ERRORS = (redis.exceptions.RedisError, OSError)
TERMINAL = {p.value for p in TERMINAL_PHASES}
# Pending for one of these: the Task is retried on a timer, not on its own status event.
WAITING = {Reason.PayloadFromMissing, Reason.PayloadFromForbidden, Reason.RedisUnreachable}
MAX_DELAY_SECONDS = 60.0
Step = Callable[[dict[str, Any]], Awaitable[None]]  # admit or cancel, given the Task's body


def succeeded_reason(status: dict[str, Any]) -> str | None:
    for c in status.get("conditions") or []:
        if c.get("type") == "Succeeded":
            return str(c.get("reason"))
    return None


class Admission:
    def __init__(
        self,
        broker: Broker,
        kube: KubeAPI,
        first_delay: float = 2.0,
        jobs: JobRunners | None = None,
    ) -> None:
        self.broker = broker
        self.kube = kube
        self.jobs = jobs  # the operator's job runners, when it runs container tasks
        self.first_delay = first_delay
        self.retries: dict[str, asyncio.Task[None]] = {}
        self.failures: dict[str, int] = {}
        self.batcher = EnqueueBatcher(broker)

    async def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        """One watch event of a Task (type None: the initial listing)."""
        step = self.step(event_type, body)
        if step is not None:
            await self.run_step(step, body)

    def step(self, event_type: str | None, body: dict[str, Any]) -> Step | None:
        """What a watch event asks for, to be run by run_step; None when nothing is to be done
        (most events: the status writer's own writes). Keeps the bookkeeping on the way."""
        uid = body["metadata"]["uid"]
        spec, status = body.get("spec") or {}, body.get("status") or {}
        phase = status.get("phase")
        if event_type == "DELETED" or phase in TERMINAL:
            self._forget(uid)
            return None
        reason = succeeded_reason(status)
        if spec.get("cancel"):
            return self._cancel
        if phase is None or (reason == Reason.Suspended and not spec.get("suspend")):
            return self._admit
        if reason in WAITING and uid not in self.retries:
            self._retry_later(body)  # waiting since before a restart
        return None

    async def run_step(self, step: Step, body: dict[str, Any]) -> None:
        await self._guarded(body, step)

    async def close(self) -> None:
        for task in self.retries.values():
            task.cancel()
        await asyncio.gather(*self.retries.values(), return_exceptions=True)

    async def _guarded(self, body: dict[str, Any], step: Step) -> None:
        try:
            await step(body)
        except Exception as e:  # the API server or Redis: try again later, never drop it
            log.warning("task %s/%s: %s; retrying", *_ref(body), e)
            self._retry_later(body)

    async def _admit(self, body: dict[str, Any]) -> None:
        meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
        generation = meta.get("generation")
        if spec.get("suspend"):
            if succeeded_reason(status) != Reason.Suspended:
                held = "held until spec.suspend is false"
                await self._write(
                    body, pending_status(Reason.Suspended, held, generation, now_ms())
                )
            return
        try:
            admitted = await admit(
                self.broker,
                self.kube,
                spec,
                meta,
                meta["namespace"],
                self.batcher.enqueue,
                container_tasks=self.jobs is not None,
            )
            if self.jobs is not None and spec.get("container"):
                self.jobs.ensure(meta["namespace"])
        except Waiting as e:
            await self._write_waiting(body, pending_status(e.reason, str(e), generation, now_ms()))
            self._retry_later(body)
            return
        except REDIS_ERRORS as e:
            unreachable = pending_status(
                Reason.RedisUnreachable, str(e)[:300], generation, now_ms(), "QueueUnavailable"
            )
            await self._write_waiting(body, unreachable)
            self._retry_later(body)
            return
        self.failures.pop(meta["uid"], None)
        if admitted is not None:  # never reaches a worker: cancelled, refused, a duplicate
            await self._write(body, admitted)

    async def _cancel(self, body: dict[str, Any]) -> None:
        meta, spec = body["metadata"], body.get("spec") or {}
        generation = meta.get("generation")
        state = await self.broker.cancel(
            meta["namespace"], task_queue(spec), meta["uid"], generation
        )
        if self.jobs is not None and spec.get("container"):
            await delete_running_jobs(self.kube, meta["namespace"], meta["uid"])
        if state is None:  # never reached the queue (suspended, or waiting): it ends here
            await self._write(body, cancelled_status(generation, now_ms()))
        self._forget(meta["uid"])

    async def _write(self, body: dict[str, Any], status: dict[str, Any]) -> None:
        meta = body["metadata"]
        await self.kube.patch_status("tasks", meta["namespace"], meta["name"], meta["uid"], status)

    async def _write_waiting(self, body: dict[str, Any], status: dict[str, Any]) -> None:
        """Write a waiting status unless the Task already says the same (each retry would
        otherwise rewrite it for a new timestamp)."""
        old = body.get("status") or {}
        same = [
            (c.get("type"), c.get("reason"), c.get("message")) for c in old.get("conditions") or []
        ]
        new = [(c.get("type"), c.get("reason"), c.get("message")) for c in status["conditions"]]
        if same != new:
            await self._write(body, status)

    def _retry_later(self, body: dict[str, Any]) -> None:
        uid = body["metadata"]["uid"]
        if uid in self.retries and not self.retries[uid].done():
            return
        failures = self.failures[uid] = self.failures.get(uid, 0) + 1
        delay = min(self.first_delay * 2 ** (failures - 1), MAX_DELAY_SECONDS)
        self.retries[uid] = asyncio.create_task(self._retry(body, delay), name=f"admit {uid}")

    async def _retry(self, body: dict[str, Any], delay: float) -> None:
        await asyncio.sleep(delay)
        namespace, name = _ref(body)
        uid = body["metadata"]["uid"]
        self.retries.pop(uid, None)
        try:
            fresh = await self.kube.get("tasks", namespace, name)
        except Exception as e:
            log.warning("task %s/%s: %s; retrying", namespace, name, e)
            self._retry_later(body)
            return
        if fresh is None or fresh["metadata"]["uid"] != uid:
            self._forget(uid)
            return
        phase = (fresh.get("status") or {}).get("phase")
        if phase in TERMINAL:
            self._forget(uid)
        else:
            step = self._cancel if (fresh.get("spec") or {}).get("cancel") else self._admit
            await self._guarded(fresh, step)

    def _forget(self, uid: str) -> None:
        self.failures.pop(uid, None)
        task = self.retries.pop(uid, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()


class EnqueueBatcher:
    """The enqueues asked for within one turn of the event loop (a burst of watch events), one
    round trip per queue rather than one per Task."""

    def __init__(self, broker: Broker, max_batch: int = 500) -> None:
        self.broker = broker
        self.max_batch = max_batch
        self.waiting: dict[tuple[str, str], list[tuple[TaskRequest, asyncio.Future[str]]]] = {}
        self.sending: set[asyncio.Task[None]] = set()

    async def enqueue(self, namespace: str, queue: str, request: TaskRequest) -> str:
        loop = asyncio.get_running_loop()
        if not self.waiting:
            loop.call_soon(self._flush)  # after the other Tasks of this turn asked too
        done: asyncio.Future[str] = loop.create_future()
        self.waiting.setdefault((namespace, queue), []).append((request, done))
        return await done

    def _flush(self) -> None:
        waiting, self.waiting = self.waiting, {}
        for (namespace, queue), items in waiting.items():
            for i in range(0, len(items), self.max_batch):
                task = asyncio.create_task(
                    self._send(namespace, queue, items[i : i + self.max_batch])
                )
                self.sending.add(task)
                task.add_done_callback(self.sending.discard)

    async def _send(
        self, namespace: str, queue: str, items: list[tuple[TaskRequest, asyncio.Future[str]]]
    ) -> None:
        try:
            ids = await self.broker.enqueue_many(namespace, queue, [r for r, _ in items])
        except Exception as e:
            if len(items) > 1 and not isinstance(e, REDIS_ERRORS):
                # One request the script refuses must not fail the others: each on its own.
                for item in items:
                    await self._send(namespace, queue, [item])
                return
            for _, done in items:
                if not done.done():
                    done.set_exception(e)
            return
        for (_, done), task_id in zip(items, ids, strict=True):
            if not done.done():
                done.set_result(task_id)


def _ref(body: dict[str, Any]) -> tuple[str, str]:
    return body["metadata"]["namespace"], body["metadata"]["name"]
