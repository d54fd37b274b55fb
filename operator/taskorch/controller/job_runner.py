"""The operator's job runner: per namespace, a worker on its JOBS_QUEUE whose one handler runs
container tasks as Jobs (controller/container_tasks.py), and one observer that lists those
Jobs and their pods for every running attempt at once.

Started for a namespace when the operator first enqueues a container task there, and at start
for every namespace whose JOBS_QUEUE Redis knows (attempts in flight across a restart). On a
stop, each runner hands its attempts back at once (a release: not counted as an attempt) and
leaves their Jobs running: the next leader waits on them again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any

from taskorch.api.container import JOBS_QUEUE
from taskorch.controller.container_tasks import JOB_NAME, TASK_KEY, ContainerTasks
from taskorch.queue.broker import Broker
from taskorch.queue.inspect import Inspector
from taskorch.settings import Settings
from taskorch.supervise import LoopEnded
from taskorch.worker.runner import Worker

log = logging.getLogger("taskorch.containers")
SELECTOR_CHUNK = 100  # task keys per list call (a set-based selector in the URL)
STOP_SECONDS = 10.0  # for the runners to hand their attempts back on a stop

# the task keys asked for, and the Jobs and pods found for them
Listing = tuple[frozenset[str], dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]


class JobObserver:
    """One namespace's Jobs and pods of the container tasks being followed, listed at most once
    a period for all of them (two list calls per SELECTOR_CHUNK running attempts), not one watch
    or poll per attempt."""

    def __init__(self, kube: Any, namespace: str, period: float) -> None:
        self.kube = kube
        self.namespace = namespace
        self.period = period
        self.keys: Counter[str] = Counter()  # task keys being waited on
        self.round: asyncio.Task[Listing] | None = None
        self.last = 0.0

    async def next(self, key: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        self.keys[key] += 1
        try:
            while True:
                if self.round is None or self.round.done():
                    self.round = asyncio.create_task(self._list())
                listed, jobs, pods = await asyncio.shield(self.round)
                if key in listed:
                    return jobs.get(key, []), pods.get(key, [])
                # It joined a listing already under way, which did not ask for it: an empty
                # answer would read as "no Job". The next round does.
                if self.round.done():
                    self.round = None
        finally:
            self.keys[key] -= 1
            if self.keys[key] <= 0:
                del self.keys[key]

    async def _list(self) -> Listing:
        await asyncio.sleep(max(0.0, self.last + self.period - time.monotonic()))
        self.last = time.monotonic()
        wanted = sorted(self.keys)
        jobs: dict[str, list[dict[str, Any]]] = {}
        pods: dict[str, list[dict[str, Any]]] = {}
        for i in range(0, len(wanted), SELECTOR_CHUNK):
            selector = f"{TASK_KEY} in ({','.join(wanted[i : i + SELECTOR_CHUNK])})"
            found_jobs, found_pods = await asyncio.gather(
                self.kube.list_jobs(self.namespace, selector),
                self.kube.list_pods(self.namespace, f"{selector},{JOB_NAME}"),
            )
            for kind, found in ((jobs, found_jobs), (pods, found_pods)):
                for obj in found:
                    key = (obj["metadata"].get("labels") or {}).get(TASK_KEY, "")
                    kind.setdefault(key, []).append(obj)
        return frozenset(wanted), jobs, pods


class JobRunners:
    """A worker per namespace on its JOBS_QUEUE, supervised: one that fails stops the operator
    (its Deployment restarts it) rather than leave container tasks unserved."""

    def __init__(
        self, broker: Broker, kube: Any, settings: Settings, namespaces: list[str]
    ) -> None:
        self.broker = broker
        self.kube = kube
        self.settings = settings
        self.namespaces = set(namespaces)  # the watched ones; empty: all
        self.workers: dict[str, Worker] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.changed = asyncio.Event()
        self.stopping = False

    def ensure(self, namespace: str) -> None:
        """Serve the namespace's JOBS_QUEUE from now on (idempotent)."""
        if namespace in self.workers or self.stopping:
            return
        observer = JobObserver(self.kube, namespace, self.settings.container_poll_seconds)
        handler = ContainerTasks(
            self.kube, namespace, observer, self.settings.image_pull_grace_seconds
        )
        worker = Worker(
            handler.app(),
            self.broker,
            namespace=namespace,
            queues=JOBS_QUEUE,
            concurrency=self.settings.container_concurrency,
            name=f"operator-jobs-{namespace}",
            grace_seconds=0.0,  # a stop hands the attempts back at once: their Jobs run on
        )
        self.workers[namespace] = worker
        self.tasks[namespace] = asyncio.create_task(worker.run(), name=f"jobs of {namespace}")
        log.info("serving container tasks of namespace %s", namespace)
        self.changed.set()

    async def run(self) -> None:
        for namespace, queue in await Inspector(self.broker).queues():
            if queue == JOBS_QUEUE and (not self.namespaces or namespace in self.namespaces):
                self.ensure(namespace)
        try:
            while True:
                self.changed.clear()
                changed = asyncio.create_task(self.changed.wait())
                done, _ = await asyncio.wait(
                    [changed, *self.tasks.values()], return_when=asyncio.FIRST_COMPLETED
                )
                changed.cancel()
                if self.stopping:
                    # kopf's cleanup stopped them (stop()): not a failure. Wait to be
                    # cancelled with the other loops; returning would read as one ending.
                    await asyncio.Future()
                for namespace, task in self.tasks.items():
                    if task in done:
                        error = None if task.cancelled() else task.exception()
                        raise LoopEnded(f"the job runner of {namespace} ended: {error!r}")
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Hand every attempt back (idempotent). Called by kopf's cleanup too (main.py), since
        kopf cancels every task left 5 s after its stop, the attempts' included."""
        self.stopping = True
        self.changed.set()
        for worker in self.workers.values():
            worker.drain()
        pending = [t for t in self.tasks.values() if not t.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=STOP_SECONDS)
            for task in late:
                task.cancel()
            for task in pending:
                with contextlib.suppress(BaseException):
                    await task
