"""The status writer: consumes the Redis state-change streams with a consumer group and writes
Task status back, coalesced per task within a batch window, acking only after the write landed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.exceptions
from kubernetes.client.exceptions import ApiException

from taskorch.api.reasons import Reason
from taskorch.controller.kube import KubeAPI
from taskorch.controller.status import task_status
from taskorch.queue import keys
from taskorch.queue.broker import Broker
from taskorch.queue.inspect import Inspector
from taskorch.queue.model import TaskInfo, TaskRef
from taskorch.supervise import raise_if_cancelled

log = logging.getLogger("taskorch.status")
GROUP_NAME = "taskorch-operator"
MAX_WRITE_ATTEMPTS = 10
STEP_POLL_SECONDS = 0.02
WorkflowCallback = Callable[[str, str, str], Awaitable[None]]  # namespace, name, uid


class StatusWriter:
    def __init__(
        self,
        broker: Broker,
        kube: KubeAPI,
        *,
        consumer: str,
        workflows: WorkflowCallback | None = None,
        batch_window: float = 0.2,
        batch: int = 2000,
    ) -> None:
        self.broker = broker
        self.kube = kube
        self.consumer = consumer
        self.workflows = workflows  # advances a Workflow whose steps changed
        self.batch_window = batch_window
        self.batch = batch
        self.inspector = Inspector(broker)
        self.streams: dict[str, str] = {}  # stream key -> "ns/queue"
        self.write_limit = asyncio.Semaphore(16)
        self.failures: dict[TaskRef, int] = {}  # failed writes per task, until one lands
        self.advanced_workflows = False  # the last batch advanced a workflow

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                # Entries delivered before a crash, or whose status write failed, stay pending
                # (unacked) and are read again ("0"), each round before the new ones (">"),
                # which keep flowing while one task's write keeps failing.
                retry_pending = True
                while True:
                    raise_if_cancelled()
                    await self._refresh_streams()
                    failed = full = False
                    if retry_pending:
                        got_any, failed, _ = await self._consume(pending=True)
                        retry_pending = failed or got_any  # until a read finds none pending
                    _, failed_new, full = await self._consume(pending=False)
                    retry_pending = retry_pending or failed_new
                    if failed or failed_new:
                        await asyncio.sleep(backoff)  # the API server may be down: back off
                        backoff = min(backoff * 2, 5.0)
                    else:
                        backoff = 0.2
                    if not full:
                        # The pause lets a task's quick succession of changes (queued, running,
                        # succeeded) coalesce into one status write; a full batch means more
                        # is waiting: read on at once. Right after a workflow was advanced, its
                        # next steps' changes are imminent: look again soon, so a chain of
                        # steps does not wait a whole window per step.
                        advanced, self.advanced_workflows = self.advanced_workflows, False
                        await asyncio.sleep(STEP_POLL_SECONDS if advanced else self.batch_window)
            except redis.exceptions.ResponseError as e:
                if "NOGROUP" in str(e):
                    log.warning("redis lost the consumer groups (restarted empty?); recreating")
                    self.streams.clear()
                    continue
                log.warning("redis refused the status writer (%s); retry in %.1fs", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except redis.exceptions.RedisError as e:
                log.warning(
                    "redis unavailable for the status writer (%s); retry in %.1fs", e, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _refresh_streams(self) -> None:
        for ns, q in await self.inspector.queues():
            stream = keys.events(ns, q)
            if stream in self.streams:
                continue
            try:
                await self.broker.redis.xgroup_create(stream, GROUP_NAME, id="0", mkstream=True)
            except redis.exceptions.ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise
            await self._adopt_orphans(stream)
            self.streams[stream] = f"{ns}/{q}"

    async def _adopt_orphans(self, stream: str) -> None:
        """Take over what a previous operator process read but never acked (its consumer name
        died with it), so a restart loses no state change; then forget the dead consumers."""
        r = self.broker.redis
        start = "0-0"
        while True:
            # (justid=True would be lighter, but redis-py then drops the cursor from the reply)
            reply = await r.xautoclaim(
                stream, GROUP_NAME, self.consumer, min_idle_time=0, start_id=start, count=1000
            )
            start = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            if start == "0-0":
                break
        for consumer in await r.xinfo_consumers(stream, GROUP_NAME):
            name = consumer["name"]
            name = name.decode() if isinstance(name, bytes) else name
            if name != self.consumer and not consumer["pending"]:
                await r.xgroup_delconsumer(stream, GROUP_NAME, name)

    async def _consume(self, *, pending: bool) -> tuple[bool, bool, bool]:
        """Read and apply one batch; returns whether it read anything, whether a write failed
        and whether a stream gave a full batch.
        One XREADGROUP per queue's stream, pipelined: one call over several streams would span
        slots, which Redis Cluster refuses."""
        if not self.streams:
            return False, False, False
        start = "0" if pending else ">"
        async with self.broker.redis.pipeline(transaction=False) as p:
            for stream in self.streams:
                p.xreadgroup(GROUP_NAME, self.consumer, {stream: start}, count=self.batch)
            replies = await p.execute()
        got = [(stream, items) for reply in replies for stream, items in reply or [] if items]
        if not got:
            return False, False, False
        full = any(len(items) >= self.batch for _, items in got)
        return True, await self._apply(got), full

    async def _apply(self, got: Any) -> bool:
        """Write the status of every task seen in `got`; ack the entries of the tasks written.
        Returns whether any write failed (its entries stay pending, to be read again)."""
        tasks: dict[TaskRef, list[str]] = {}  # task -> states seen, in order
        entries: dict[TaskRef | None, list[tuple[str, Any]]] = {}
        for stream, items in got:
            stream_key = stream.decode() if isinstance(stream, bytes) else stream
            ns, _, queue = self.streams[stream_key].partition("/")
            for entry_id, fields in items:
                if not fields:  # trimmed from the stream while pending: nothing to write
                    entries.setdefault(None, []).append((stream_key, entry_id))
                    continue
                ref = TaskRef(ns, queue, fields[b"id"].decode())
                tasks.setdefault(ref, []).append(fields[b"state"].decode())
                entries.setdefault(ref, []).append((stream_key, entry_id))
        refs = list(tasks)
        infos = await self.broker.get_many(refs)
        results: list[BaseException | None] = list(
            await asyncio.gather(
                *(self._write(r, info, tasks[r]) for r, info in zip(refs, infos, strict=True)),
                return_exceptions=True,
            )
        )
        # Steps of workflows: one advance of each workflow per batch, after its steps' changes.
        steps_of: dict[tuple[str, str, str], list[int]] = {}
        for i, info in enumerate(infos):
            if info is not None and info.workflow and self.workflows is not None:
                name, _, uid = info.workflow.partition("/")
                steps_of.setdefault((info.namespace, name, uid), []).append(i)
        advanced = await asyncio.gather(
            *(self.workflows(*w) for w in steps_of if self.workflows is not None),
            return_exceptions=True,
        )
        self.advanced_workflows = self.advanced_workflows or bool(steps_of)
        for indices, outcome in zip(steps_of.values(), advanced, strict=True):
            if isinstance(outcome, BaseException):
                for i in indices:  # its steps' entries stay pending: advanced again later
                    results[i] = outcome
        failed = [e for e in results if isinstance(e, BaseException)]
        if failed:
            log.warning("%d status writes failed; they will be retried: %s", len(failed), failed[0])
        written: list[TaskRef | None] = [None]
        for ref, error in zip(refs, results, strict=True):
            if error is None:
                self.failures.pop(ref, None)
                written.append(ref)
            elif (tries := self.failures.get(ref, 0) + 1) >= MAX_WRITE_ATTEMPTS:
                # Given up on (acked), so that it cannot hold up the stream for ever; the
                # tracker's resync still rewrites a quiet Task from its record.
                log.error(
                    "giving up on the status of %s after %d failed writes: %r", ref, tries, error
                )
                self.failures.pop(ref, None)
                written.append(ref)
            else:
                self.failures[ref] = tries
        done: dict[str, list[Any]] = {}  # stream -> entry ids to ack and delete
        for key in written:
            for stream_key, entry_id in entries.get(key, []):
                done.setdefault(stream_key, []).append(entry_id)
        async with self.broker.redis.pipeline(transaction=False) as p:
            for stream_key, ids in done.items():  # one XACK and one XDEL a stream
                p.xack(stream_key, GROUP_NAME, *ids)
                p.xdel(stream_key, *ids)
            await p.execute()
        return bool(failed)

    async def _write(self, ref: TaskRef, info: TaskInfo | None, states: list[str]) -> None:
        if info is None or not info.cr_name:
            return  # expired or not CR-backed
        ns = ref.namespace
        async with self.write_limit:
            try:
                # The task id is the Task's UID: a late change of a deleted Task never lands on
                # a new Task of the same name.
                written = await self.kube.patch_status(
                    "tasks", ns, info.cr_name, info.id, task_status(info, info.generation)
                )
            except ApiException as e:
                if e.status == 422:
                    log.error("status of %s/%s rejected: %s", ns, info.cr_name, e.body)
                    return
                raise
            if written:
                await self._events(ns, info, states)

    async def _events(self, ns: str, info: TaskInfo, states: list[str]) -> None:
        err = info.error or {}
        msg = f"{err.get('type', 'Error')}: {err.get('message', '')}"
        for state in states:
            if state == "retrying":
                await self.kube.event(
                    "Task",
                    ns,
                    info.cr_name,
                    info.id,
                    "Warning",
                    Reason.Retrying,
                    f"attempt {info.attempt} failed, retrying: {msg}",
                )
            elif state == "dead":
                await self.kube.event(
                    "Task",
                    ns,
                    info.cr_name,
                    info.id,
                    "Warning",
                    "DeadLettered",
                    f"{err.get('reason', 'Error')} after {info.attempt} attempt(s): {msg}",
                )
