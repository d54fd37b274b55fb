"""The Tasks' own list-and-watch, instead of a kopf handler: every watch event of a Task feeds
admission (controller/admission.py), the tracker (resync and TTL) and, for a deleted Task, a
cancel in Redis.

Why not kopf: a Task is the high-volume kind (hundreds a second), and kopf's per-event machinery
(a diff base built and compared, a cause detected, each handler invoked with its own logger and
a log line, an empty patch applied) and its watch stream cost about half of the operator's CPU
per Task in the CR bench (bench/README.md). Here an event costs its JSON parse, the tracker's
bookkeeping, and only when something is to be done, a call into admission. The other kinds stay
with kopf.

The watch runs in a thread with the sync client (the same credentials as every other call the
operator makes) and hands the events over to the event loop a chunk at a time. Events of one Task
are handled in order, one at a time; a Task's events that arrive while it is being handled
collapse into the latest (kopf's batching does the same)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Protocol

import redis.exceptions

from taskorch.api.task import task_queue
from taskorch.controller.admission import Admission, Step
from taskorch.controller.tracker import Tracker
from taskorch.queue.broker import Broker

log = logging.getLogger("taskorch.tasks")
REDIS_ERRORS = (redis.exceptions.RedisError, OSError)
Event = tuple[str | None, dict[str, Any]]  # type (None: from the initial listing), the object
WATCH_SECONDS = 300  # the server ends a watch after this; it is resumed from the last version
MAX_BACKOFF_SECONDS = 30.0


class TaskSource(Protocol):
    """The list and watch calls, made in the calling thread (Kube; a fake in the unit tests)."""

    def list_page_sync(
        self, plural: str, namespace: str | None, token: str | None
    ) -> dict[str, Any]: ...

    def watch_sync(
        self, plural: str, namespace: str | None, version: str, seconds: int
    ) -> Iterator[list[bytes]]: ...


class NamespaceSeen(Protocol):
    namespaces: set[str]  # those whose Redis user is made

    async def seen(self, namespace: str) -> None: ...


class TaskWatch:
    def __init__(
        self,
        kube: TaskSource,
        broker: Broker,
        admission: Admission,
        tracker: Tracker,
        namespaces: list[str],
        users: NamespaceSeen | None = None,
    ) -> None:
        self.kube = kube
        self.broker = broker
        self.admission = admission
        self.tracker = tracker
        self.namespaces: list[str | None] = list(namespaces) or [None]  # None: cluster-wide
        self.users = users  # Redis ACL users made per namespace, when enabled
        self.busy: dict[str, asyncio.Task[None]] = {}  # uid -> the task handling its events
        self.latest: dict[str, Event] = {}  # uid -> its newest event not yet handled
        self.stop = threading.Event()
        self.background: set[asyncio.Task[None]] = set()
        self.joining: set[str] = set()  # namespaces whose Redis user is being made

    async def run(self) -> None:
        """Watch until cancelled (each namespace in its own thread)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def deliver(events: list[Event]) -> None:
            if self.stop.is_set():
                return
            try:
                loop.call_soon_threadsafe(self._dispatch, events)
            except RuntimeError:  # the loop is closed: the operator is stopping
                self.stop.set()

        def watch(namespace: str | None) -> None:
            try:
                self._watch_forever(namespace, deliver)
            except BaseException as e:  # a bug: end the loop, so the process restarts
                if not self.stop.is_set():
                    with contextlib.suppress(RuntimeError):  # the loop is closed already
                        loop.call_soon_threadsafe(_fail, done, e)

        threads = [
            threading.Thread(target=watch, args=(ns,), name=f"watch tasks {ns or '*'}", daemon=True)
            for ns in self.namespaces
        ]
        for t in threads:
            t.start()
        try:
            await done
        finally:
            self.stop.set()  # the threads end at their next event or watch timeout
            for task in self.busy.values():
                task.cancel()

    # -- in the watch threads --

    def _watch_forever(self, namespace: str | None, deliver: Callable[[list[Event]], None]) -> None:
        version: str | None = None
        backoff = 1.0
        while not self.stop.is_set():
            try:
                if version is None:
                    version = self._list(namespace, deliver)
                version = self._watch(namespace, version, deliver)
                backoff = 1.0
            except Exception as e:  # the API server is down or refused: list again, later
                log.warning(
                    "watch of tasks in %s: %s; again in %.0fs", namespace or "*", e, backoff
                )
                version = None
                self.stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _list(self, namespace: str | None, deliver: Callable[[list[Event]], None]) -> str:
        """Deliver every Task (as events of type None, like kopf's initial listing); returns the
        list's resourceVersion, from which the watch starts."""
        token: str | None = None
        while True:
            page = self.kube.list_page_sync("tasks", namespace, token)
            deliver([(None, item) for item in page.get("items") or []])
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return str(meta["resourceVersion"])

    def _watch(
        self, namespace: str | None, version: str, deliver: Callable[[list[Event]], None]
    ) -> str | None:
        """Deliver events until the server ends the watch; returns the version to resume from,
        or None when it is too old (410 Gone) and the Tasks must be listed again."""
        for chunk in self.kube.watch_sync("tasks", namespace, version, WATCH_SECONDS):
            if self.stop.is_set():
                return version
            events: list[Event] = []
            for raw in chunk:
                event = json.loads(raw)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        deliver(events)
                        return None
                    raise RuntimeError(f"watch error: {obj.get('message') or obj}")
                version = str(obj["metadata"]["resourceVersion"])
                if kind != "BOOKMARK":
                    events.append((kind, obj))
            if events:
                deliver(events)
        return version

    # -- on the event loop --

    def _dispatch(self, events: list[Event]) -> None:
        for kind, body in events:
            meta = body["metadata"]
            self.tracker.observe(kind, body)
            namespace = meta["namespace"]
            users, joining = self.users, self.joining  # one call per namespace at a time
            if users is not None and namespace not in users.namespaces | joining:
                joining.add(namespace)
                self._background(self._join(namespace))
            if kind == "DELETED":
                self._background(self._cancel_deleted(body))
            uid = meta["uid"]
            if uid in self.busy:
                self.latest[uid] = (kind, body)  # handled when the current one is done
            else:
                step = self.admission.step(kind, body)
                if step is not None:
                    self.busy[uid] = asyncio.create_task(self._handle(uid, step, body))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.background.add(task)  # held, or the loop may collect it before it is done
        task.add_done_callback(self.background.discard)

    async def _handle(self, uid: str, step: Step, body: dict[str, Any]) -> None:
        try:
            while True:
                await self.admission.run_step(step, body)
                newer = self.latest.pop(uid, None)
                if newer is None:
                    return
                kind, body = newer
                next_step = self.admission.step(kind, body)
                if next_step is None:
                    return
                step = next_step
        finally:
            self.busy.pop(uid, None)

    async def _join(self, namespace: str) -> None:
        """Make the namespace's Redis user (RedisUsers.seen: retried at its next Task event if
        it fails, and every few minutes by the redis-users loop)."""
        assert self.users is not None
        try:
            await self.users.seen(namespace)
        except Exception as e:
            log.warning("could not make the Redis user of %s: %s", namespace, e)
        finally:
            self.joining.discard(namespace)

    async def _cancel_deleted(self, body: dict[str, Any]) -> None:
        """Deletion is seen here rather than by a finalizer because a finalizer keeps a Task from
        being deleted while the operator is down. A deletion the operator misses (down, or Redis
        unreachable) leaves the task to run once."""
        meta, spec = body["metadata"], body.get("spec") or {}
        try:
            await self.broker.cancel(meta["namespace"], task_queue(spec), meta["uid"])
        except REDIS_ERRORS as e:
            log.warning("could not cancel deleted %s/%s: %s", meta["namespace"], meta["name"], e)


def _fail(done: asyncio.Future[None], error: BaseException) -> None:
    if not done.done():
        done.set_exception(error)
