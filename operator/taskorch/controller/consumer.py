"""The status writer: consumes the Redis state-change streams with a consumer group and writes
Task status back, coalesced per task within a batch window, acking only after the write landed."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.exceptions
from kubernetes.client.exceptions import ApiException

from taskorch.controller.kube import Kube
from taskorch.controller.status import task_status
from taskorch.queue import keys
from taskorch.queue.broker import Broker
from taskorch.queue.model import TaskInfo

log = logging.getLogger("taskorch.status")
GROUP_NAME = "taskorch-operator"


class StatusWriter:
    def __init__(
        self,
        broker: Broker,
        kube: Kube,
        *,
        consumer: str,
        batch_window: float = 0.2,
        batch: int = 2000,
    ) -> None:
        self.broker = broker
        self.kube = kube
        self.consumer = consumer
        self.batch_window = batch_window
        self.batch = batch
        self.streams: dict[str, str] = {}  # stream key -> "ns/queue"
        self.write_limit = asyncio.Semaphore(16)

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._refresh_streams()
                # Entries delivered before a crash and never acked come first ("0"), then new ones.
                await self._consume(pending=True)
                while True:
                    await self._refresh_streams()
                    await self._consume(pending=False)
                    backoff = 0.2
            except redis.exceptions.ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                log.warning("redis lost the consumer groups (restarted empty?); recreating them")
                self.streams.clear()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                log.warning(
                    "redis unavailable for the status writer (%s); retry in %.1fs", e, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _refresh_streams(self) -> None:
        for ns, q in await self.broker.queues():
            stream = keys.events(ns, q)
            if stream in self.streams:
                continue
            try:
                await self.broker.redis.xgroup_create(stream, GROUP_NAME, id="0", mkstream=True)
            except redis.exceptions.ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise
            self.streams[stream] = f"{ns}/{q}"

    async def _consume(self, *, pending: bool) -> None:
        if not self.streams:
            await asyncio.sleep(0.5)
            return
        start = "0" if pending else ">"
        ids: dict[Any, Any] = dict.fromkeys(self.streams, start)
        r = self.broker.redis
        got: Any = await r.xreadgroup(
            GROUP_NAME, self.consumer, ids, count=self.batch, block=None if pending else 1000
        )
        if not pending and got:
            await asyncio.sleep(
                self.batch_window
            )  # let a task's quick succession of changes coalesce
            more = await r.xreadgroup(GROUP_NAME, self.consumer, ids, count=self.batch)
            got = [*got, *(more or [])]
        if got:
            await self._apply(got)

    async def _apply(self, got: Any) -> None:
        entries: dict[str, list[bytes]] = {}
        tasks: dict[tuple[str, str, str], list[str]] = {}  # task -> states seen, in order
        for stream, items in got:
            stream_key = stream.decode() if isinstance(stream, bytes) else stream
            ns, _, queue = self.streams[stream_key].partition("/")
            for entry_id, fields in items:
                entries.setdefault(stream_key, []).append(entry_id)
                if not fields:
                    continue
                tid = fields[b"id"].decode()
                tasks.setdefault((ns, queue, tid), []).append(fields[b"state"].decode())
        refs = list(tasks)
        infos = await self.broker.get_many(refs)
        results = await asyncio.gather(
            *(self._write(ref, info, tasks[ref]) for ref, info in zip(refs, infos, strict=True)),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.warning("%d status writes failed; they will be retried: %s", len(failed), failed[0])
            return  # nothing acked: the pending entries are read again
        async with r_pipeline(self.broker) as p:
            for stream_key, ids in entries.items():
                p.xack(stream_key, GROUP_NAME, *ids)
                p.xdel(stream_key, *ids)
            await p.execute()

    async def _write(
        self, ref: tuple[str, str, str], info: TaskInfo | None, states: list[str]
    ) -> None:
        if info is None or not info.cr_name:
            return  # expired or not CR-backed
        ns = ref[0]
        async with self.write_limit:
            try:
                written = await self.kube.patch_status(
                    "tasks", ns, info.cr_name, task_status(info, info.generation)
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
                    "Retrying",
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


def r_pipeline(broker: Broker) -> Any:
    return broker.redis.pipeline(transaction=False)
