"""The worker process: claim, run, settle, heartbeat, drain.

One loop per process fuses settlement of finished attempts with the next claim (one Redis round
trip); a watcher blocks on the queues' wake-up markers only while there is free capacity, so an
idle worker picks new work without a polling delay and a busy one never steals a wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import socket
import time
import traceback
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis.exceptions
from pydantic import ValidationError

from taskorch.queue import keys
from taskorch.queue.broker import Broker
from taskorch.queue.model import Claimed, Outcome, Settlement, dumps, now_ms
from taskorch.worker import metrics
from taskorch.worker.app import App, Context, Handler
from taskorch.worker.retry import DEFAULT_RETRY, NonRetryable, Retry

log = logging.getLogger("taskorch.worker")
MAX_RESULT_BYTES = 512 * 1024
TRACEBACK_TAIL = 2000
IDLE_WAKE_SECONDS = 1.0


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


@dataclass
class Running:
    claimed: Claimed
    queue: str
    task: asyncio.Task[Settlement | None] | None = None
    stop_reason: str | None = None  # "cancel" (user), "lost" (lease gone), "release" (drain)
    started_ms: int = field(default_factory=now_ms)


def _error(exc: BaseException, reason: str) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(exc))[-TRACEBACK_TAIL:]
    return {
        "type": type(exc).__name__,
        "message": str(exc)[:1024],
        "reason": reason,
        "traceback": tb,
    }


class Worker:
    def __init__(
        self,
        app: App,
        broker: Broker,
        *,
        namespace: str,
        queues: Sequence[str],
        concurrency: int = 16,
        name: str | None = None,
        lease_seconds: float | None = None,
        grace_seconds: float = 30.0,
    ) -> None:
        self.app = app
        self.broker = broker
        self.namespace = namespace
        self.queues = list(queues)
        self.concurrency = concurrency
        self.name = name or worker_name()
        self.lease = lease_seconds or broker.settings.lease_seconds
        self.grace = grace_seconds
        self.running: dict[str, Running] = {}
        self.pending: dict[str, list[Settlement]] = {q: [] for q in self.queues}
        self.progress: dict[str, dict[str, str]] = {q: {} for q in self.queues}
        self.next_due_ms: dict[str, int | None] = {}  # per queue, from the last settle_claim
        self.wake = asyncio.Event()
        self.has_capacity = asyncio.Event()
        self.draining = False
        self._drain_started = 0.0
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="handler")

    # -- lifecycle -----------------------------------------------------------------------------

    def drain(self) -> None:
        """Stop claiming; run() returns once in-flight work finished or the grace period ended."""
        if not self.draining:
            log.info("draining: %d attempts in flight", len(self.running))
            self.draining = True
            self._drain_started = time.monotonic()
            self.wake.set()

    async def run(self) -> None:
        helpers = [
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._watch_markers(), name="markers"),
        ]
        log.info("worker %s serving %s/%s", self.name, self.namespace, ",".join(self.queues))
        try:
            await self._loop()
            await self._finish_drain()
        finally:
            for h in helpers:
                h.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            self.pool.shutdown(wait=False, cancel_futures=True)

    async def _loop(self) -> None:
        backoff = 0.1
        while not (self.draining and not self.running):
            self.wake.clear()
            try:
                worked = await self._settle_and_claim()
                backoff = 0.1
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                log.warning("redis unavailable (%s); retrying in %.1fs", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if worked:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self._idle_timeout())
            if self.draining and self.running and self._drain_deadline_passed():
                self._stop_all("release")

    async def _settle_and_claim(self, *, claim: bool = True) -> bool:
        worked = False
        for queue in self.queues:
            settlements, self.pending[queue] = self.pending[queue], []
            free = 0 if (self.draining or not claim) else self.concurrency - len(self.running)
            if not settlements and free <= 0:
                continue
            try:
                rejected, claimed, self.next_due_ms[queue] = await self.broker.settle_claim(
                    self.namespace, queue, self.name, settlements, free, self.lease
                )
            except BaseException:
                self.pending[queue] = settlements + self.pending[queue]
                raise
            if rejected:
                log.warning("stale settlements rejected by fence: %s", rejected)
            for c in claimed:
                self._start(c, queue)
            worked = worked or bool(claimed)
        self._update_capacity()
        return worked

    def _idle_timeout(self) -> float:
        """Sleep until the next delayed task falls due (retry backoff, runAt), as the last
        settle_claim reported it, at most a second. Without free capacity a due task could not
        be claimed anyway: a finishing attempt wakes the loop."""
        dues = [d for d in self.next_due_ms.values() if d is not None]
        if not dues or self.draining or len(self.running) >= self.concurrency:
            return IDLE_WAKE_SECONDS
        return min(IDLE_WAKE_SECONDS, max(0.0, (min(dues) - now_ms()) / 1000))

    def _drain_deadline_passed(self) -> bool:
        return time.monotonic() >= self._drain_started + self.grace

    async def _finish_drain(self) -> None:
        await self._settle_and_claim(claim=False)

    def _update_capacity(self) -> None:
        metrics.IN_FLIGHT.set(len(self.running))
        if not self.draining and len(self.running) < self.concurrency:
            self.has_capacity.set()
        else:
            self.has_capacity.clear()

    # -- background helpers --------------------------------------------------------------------

    async def _watch_markers(self) -> None:
        markers = [keys.marker(self.namespace, q) for q in self.queues]
        while True:
            await self.has_capacity.wait()
            try:
                if await self.broker.redis.blpop(markers, timeout=IDLE_WAKE_SECONDS):
                    self.wake.set()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                await asyncio.sleep(1.0)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self._renew_leases()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                log.warning("heartbeat failed: %s", e)

    async def _renew_leases(self) -> None:
        for queue in self.queues:
            progress, self.progress[queue] = self.progress[queue], {}
            leases = [
                (r.claimed.id, r.claimed.fence, progress.get(r.claimed.id, ""))
                for r in self.running.values()
                if r.queue == queue
            ]
            if not leases:
                continue
            lost, cancels = await self.broker.extend(self.namespace, queue, leases, self.lease)
            for task_id in lost:
                self._stop(task_id, "lost")
            for task_id in cancels:
                self._stop(task_id, "cancel")

    # -- running attempts ----------------------------------------------------------------------

    def _start(self, c: Claimed, queue: str) -> None:
        r = Running(c, queue)
        self.running[c.id] = r
        r.task = asyncio.create_task(self._attempt(r), name=f"task-{c.id}")
        r.task.add_done_callback(functools.partial(self._done, r))

    def _stop(self, task_id: str, reason: str) -> None:
        r = self.running.get(task_id)
        if r and r.task and not r.task.done():
            r.stop_reason = reason
            r.task.cancel()

    def _stop_all(self, reason: str) -> None:
        for task_id in list(self.running):
            self._stop(task_id, reason)

    def _done(self, r: Running, task: asyncio.Task[Settlement | None]) -> None:
        self.running.pop(r.claimed.id, None)
        settlement = None if task.cancelled() else task.result()
        if settlement is not None:
            self.pending[r.queue].append(settlement)
        self._update_capacity()
        self.wake.set()

    def _report_progress(self, queue: str, task_id: str, value: Any) -> None:
        self.progress[queue][task_id] = dumps(value)

    async def _attempt(self, r: Running) -> Settlement | None:
        c = r.claimed
        labels = (r.queue, c.type)
        handler = self.app.handlers.get(c.type)

        def settle(
            outcome: Outcome, data: str, label: str, err: str | None = None, due: int = 0
        ) -> Settlement:
            history = {
                "attempt": c.attempt,
                "worker": self.name,
                "startTime": r.started_ms,
                "finishTime": now_ms(),
                "outcome": label,
            }
            if err:
                history["error"] = err[:300]
            return Settlement(c.id, c.fence, outcome, data, due, history)

        def dead(exc: BaseException, reason: str) -> Settlement:
            metrics.DEAD.labels(*labels).inc()
            return settle(Outcome.dead, dumps(_error(exc, reason)), "Failed", f"{reason}: {exc}")

        if handler is None:
            err = LookupError(
                f"no handler registered for task type {c.type!r} on worker {self.name}"
            )
            return dead(err, "UnknownTaskType")
        try:
            payload = handler.parse_payload(json.loads(c.payload) if c.payload else None)
        except ValidationError as e:
            return dead(e, "InvalidPayload")
        ctx = Context(
            task_id=c.id,
            type=c.type,
            namespace=self.namespace,
            queue=r.queue,
            attempt=c.attempt,
            worker=self.name,
            progress_reporter=functools.partial(self._report_progress, r.queue),
        )
        policy = Retry.from_spec(c.policy) if c.policy else handler.retry or DEFAULT_RETRY
        started = time.perf_counter()
        try:
            result = await self._call(handler, ctx, payload, c.timeout or handler.timeout)
        except asyncio.CancelledError:
            if r.stop_reason == "cancel":
                return settle(Outcome.cancelled, "", "Cancelled")
            if r.stop_reason == "release":
                return settle(Outcome.release, "", "Released")
            return None  # lease lost: the attempt that replaced it owns the task now
        except Exception as e:
            metrics.FAILED.labels(*labels).inc()
            metrics.DURATION.labels(*labels).observe(time.perf_counter() - started)
            outcome = "TimedOut" if isinstance(e, TimeoutError) else "Failed"
            failures = c.failures + 1
            max_attempts = c.max_attempts or policy.max_attempts
            if isinstance(e, NonRetryable):
                return dead(e, e.reason)
            if not policy.retries(e):
                return dead(e, "NonRetryableError")
            if failures >= max_attempts:
                return dead(e, "MaxAttemptsExceeded")
            metrics.RETRIED.labels(*labels).inc()
            due = now_ms() + int(policy.delay(failures) * 1000)
            return settle(
                Outcome.retry,
                dumps(_error(e, "HandlerError")),
                outcome,
                f"{type(e).__name__}: {e}",
                due,
            )
        metrics.DURATION.labels(*labels).observe(time.perf_counter() - started)
        try:
            data = dumps(result)
        except (TypeError, ValueError) as e:
            return dead(e, "ResultNotSerializable")
        if len(data) > MAX_RESULT_BYTES:
            return dead(
                ValueError(f"result is {len(data)} bytes, over {MAX_RESULT_BYTES}"),
                "ResultTooLarge",
            )
        metrics.PROCESSED.labels(*labels).inc()
        return settle(Outcome.ok, data, "Succeeded")

    async def _call(
        self, handler: Handler, ctx: Context, payload: Any, timeout: float | None
    ) -> Any:
        args = (ctx, payload) if handler.takes_payload else (ctx,)
        if handler.is_async:
            return await asyncio.wait_for(handler.func(*args), timeout)
        loop = asyncio.get_running_loop()
        call = functools.partial(handler.func, *args)
        # A sync handler's thread cannot be interrupted: on timeout its result is discarded.
        return await asyncio.wait_for(loop.run_in_executor(self.pool, call), timeout)
