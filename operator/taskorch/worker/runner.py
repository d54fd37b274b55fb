"""The worker process: claim, run, settle, heartbeat, drain.

One loop per process fuses settlement of finished attempts with the next claim (one Redis round
trip per queue); a watcher per queue blocks on its wake-up marker only while there is free
capacity, so an idle worker picks new work without a polling delay and a busy one never steals
a wake-up. The heartbeat and the watchers are supervised: if one ends, the worker stops with an
error rather than run tasks whose leases it can no longer renew.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis.exceptions
from pydantic import ValidationError

from taskorch import logs, tracing
from taskorch.api.reasons import Reason
from taskorch.errors import AttemptFailed, LeasesLost, NonRetryable
from taskorch.queue import keys
from taskorch.queue.broker import Broker
from taskorch.queue.model import Claimed, Outcome, Settlement, dumps, size_in_bytes
from taskorch.supervise import raise_if_cancelled, run_supervised
from taskorch.worker import metrics
from taskorch.worker.app import App, Context, Handler
from taskorch.worker.failure import error_record, secret_values
from taskorch.worker.presence import Presence
from taskorch.worker.queues import QueueSet
from taskorch.worker.retry import DEFAULT_RETRY, Retry
from taskorch.worker.threads import HandlerThreads

log = logging.getLogger("taskorch.worker")
MAX_RESULT_BYTES = 512 * 1024
MAX_PROGRESS_BYTES = 16 * 1024
IDLE_WAKE_SECONDS = 1.0
HISTORY_ERROR_CAP = 300
MAX_TYPE_STATS = 100


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


@dataclass
class Running:
    claimed: Claimed
    queue: str
    task: asyncio.Task[Settlement | None] | None = None
    stop_reason: str | None = None  # "cancel" (user), "lost" (lease gone), "release" (drain)


class Worker:
    def __init__(
        self,
        app: App,
        broker: Broker,
        *,
        namespace: str,
        queues: QueueSet | str,
        concurrency: int = 16,
        name: str | None = None,
        lease_seconds: float | None = None,
        grace_seconds: float = 30.0,
    ) -> None:
        self.app = app
        self.broker = broker
        self.namespace = namespace
        self.queue_set = queues if isinstance(queues, QueueSet) else QueueSet.parse(queues)
        self.queues = list(self.queue_set.names)
        self.concurrency = concurrency
        self.name = name or worker_name()
        self.lease = lease_seconds or broker.settings.lease_seconds
        self.grace = grace_seconds
        self.running: dict[str, Running] = {}
        self.pending: dict[str, list[Settlement]] = {q: [] for q in self.queues}
        self.progress: dict[str, dict[str, str]] = {q: {} for q in self.queues}
        self.next_due_at: dict[str, float] = {}  # per queue: monotonic time a delayed task is due
        self.queue_retry: dict[str, dict[str, Any] | None] = {}  # per queue: its defaultRetry
        self.wake = asyncio.Event()
        self.has_capacity = asyncio.Event()
        self.draining = False
        self.quiesced = False  # the scaler asked this worker to stop claiming (worker/presence.py)
        self.claims_in_flight = 0
        self.finished = 0  # attempts run to an end, for the dashboard's per-worker throughput
        # per task type: [attempts that returned, attempts that raised, handler seconds], for
        # the dashboard's per-type figures (written with the presence)
        self.type_stats: dict[str, list[float]] = {}
        self._drain_started = 0.0
        self.threads = HandlerThreads(concurrency, on_release=self._capacity_changed)
        self.refused_types: set[str] = set()
        self.rng = random.Random()

    # -- lifecycle -----------------------------------------------------------------------------

    def drain(self) -> None:
        """Stop claiming; run() returns once in-flight work finished or the grace period ended."""
        if not self.draining:
            log.info("draining: %d attempts in flight", len(self.running))
            self.draining = True
            self._drain_started = time.monotonic()
            self.wake.set()

    def set_quiesced(self, quiesced: bool) -> None:
        """Stop claiming (the scaler is about to remove this worker's pod) or claim again."""
        if quiesced != self.quiesced:
            log.info("%s claiming (the scaler's request)", "stopped" if quiesced else "resumed")
            self.quiesced = quiesced
            self.wake.set()

    async def run(self) -> None:
        """Serve until drained. Raises LoopEnded (the process must exit non-zero) when the
        heartbeat or a wake-up watcher ends, e.g. because leases could not be renewed."""
        log.info("worker %s serving %s/%s", self.name, self.namespace, self.queue_set)
        presence = Presence(self)
        loops = {"heartbeat": self._heartbeat(), "presence": presence.run()}
        loops.update({f"wake-ups of {q}": self._watch_marker(q) for q in self.queues})
        try:
            await run_supervised(self._serve(), loops)
        finally:
            self._stop_all("lost")  # stopped by a failed loop: others own these tasks now
            self.threads.shutdown()
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await presence.leave()

    async def _serve(self) -> None:
        await self._loop()
        await self._finish_drain()

    async def _loop(self) -> None:
        backoff = 0.1
        while not (self.draining and not self.running):
            raise_if_cancelled()
            self.wake.clear()
            try:
                worked = await self._settle_and_claim()
                backoff = 0.1
            except redis.exceptions.RedisError as e:
                # Unreachable, or refusing writes (OOM, READONLY after a failover): nothing is
                # lost, settlements stay pending; retry with backoff.
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

    def free_capacity(self) -> int:
        """Slots to claim into: hung sync-handler threads still hold theirs."""
        if self.draining or self.quiesced:
            return 0
        return max(0, self.concurrency - len(self.running) - self.threads.hung)

    async def _settle_and_claim(self, *, claim: bool = True) -> bool:
        """One round: settle every queue's finished attempts and share the free capacity among
        the queues (strict order or weights, see worker/queues.py)."""
        free = self.free_capacity() if claim else 0
        remaining = free
        asked_fully: list[str] = []  # queues that gave all they were asked for: maybe more
        for queue in self.queue_set.order(self.rng):
            want = min(remaining, self.queue_set.share(queue, free))
            got = await self._settle_and_claim_queue(queue, want)
            remaining -= got
            if want and got == want:
                asked_fully.append(queue)
        if self.queue_set.weights is not None:
            # Capacity a queue could not use goes to the others that still have work.
            for queue in asked_fully:
                if remaining <= 0:
                    break
                remaining -= await self._settle_and_claim_queue(queue, remaining)
        self._update_capacity()  # not a wake-up: the loop decides whether to sleep
        return remaining < free

    async def _settle_and_claim_queue(self, queue: str, n: int) -> int:
        # Counted until the claimed tasks are running, so the presence never reports this
        # worker idle while a claim's answer is on its way.
        self.claims_in_flight += 1
        try:
            return await self._settle_and_claim_one(queue, n)
        finally:
            self.claims_in_flight -= 1

    async def _settle_and_claim_one(self, queue: str, n: int) -> int:
        settlements, self.pending[queue] = self.pending[queue], []
        if not settlements and n <= 0:
            return 0
        started_ns = time.time_ns()
        try:
            result = await self.broker.settle_claim(
                self.namespace, queue, self.name, settlements, n, self.lease
            )
        except redis.exceptions.ResponseError as e:
            if not settlements or _is_transient(e):
                self.pending[queue] = settlements + self.pending[queue]
                raise
            # A script error for one task must not take the worker, nor the other settlements
            # of the batch, with it.
            log.error("the queue refused a batch of %d settlements: %s", len(settlements), e)
            await self._settle_one_by_one(queue, settlements)
            return 0
        except BaseException:
            self.pending[queue] = settlements + self.pending[queue]
            raise
        if tracing.enabled():
            self._trace_round_trip(queue, started_ns, settlements, result.claimed)
        if result.rejected:
            log.warning("stale settlements rejected by fence: %s", result.rejected)
        self.queue_retry[queue] = result.default_retry
        for c in result.claimed:
            self._start(c, queue)
        if result.next_due_in_ms is None:
            self.next_due_at.pop(queue, None)
        else:
            self.next_due_at[queue] = time.monotonic() + result.next_due_in_ms / 1000
        return len(result.claimed)

    def _trace_round_trip(
        self, queue: str, started_ns: int, settled: list[Settlement], claimed: list[Claimed]
    ) -> None:
        """The claim and settle spans of the tasks this round trip claimed and settled."""
        ended_ns = time.time_ns()
        attrs = {"messaging.destination.name": queue, "taskorch.worker": self.name}
        for c in claimed:
            attempt = {**attrs, "taskorch.task.id": c.id, "taskorch.attempt": c.attempt}
            tracing.record("taskorch.claim", c.traceparent, started_ns, ended_ns, attempt)
        for st in settled:
            outcome = {**attrs, "taskorch.task.id": st.id, "taskorch.outcome": st.outcome.value}
            tracing.record("taskorch.settle", st.trace, started_ns, ended_ns, outcome)

    async def _settle_one_by_one(self, queue: str, settlements: list[Settlement]) -> None:
        for i, st in enumerate(settlements):
            try:
                await self.broker.settle_claim(self.namespace, queue, self.name, [st], 0)
                continue
            except redis.exceptions.ResponseError as e:
                if _is_transient(e):
                    self.pending[queue].append(st)
                    continue
                error = e
            except BaseException:
                self.pending[queue] += settlements[i:]  # unreachable: settle the rest later
                raise
            log.error("settlement of %s refused by the queue (%s): dead-lettering it", st.id, error)
            refused = dumps(
                {
                    "type": "SettlementRefused",
                    "reason": Reason.SettlementRefused,
                    "message": f"the queue refused this attempt's {st.outcome} settlement: "
                    f"{str(error)[:300]}",
                }
            )
            fallback = Settlement(st.id, st.fence, Outcome.dead, refused)
            try:
                await self.broker.settle_claim(self.namespace, queue, self.name, [fallback], 0)
            except redis.exceptions.ResponseError as again:
                # Left to its lease: the reaper recovers it, and dead-letters it past the limit.
                log.error(
                    "could not dead-letter %s either (%s); its lease will expire", st.id, again
                )

    def _idle_timeout(self) -> float:
        """Sleep until the next delayed task falls due (retry backoff, runAt), as the last
        settle_claim reported it, at most a second. Without free capacity a due task could not
        be claimed anyway: a finishing attempt wakes the loop."""
        if not self.next_due_at or self.free_capacity() <= 0:
            return IDLE_WAKE_SECONDS
        return min(IDLE_WAKE_SECONDS, max(0.0, min(self.next_due_at.values()) - time.monotonic()))

    def _drain_deadline_passed(self) -> bool:
        return time.monotonic() >= self._drain_started + self.grace

    async def _finish_drain(self) -> None:
        try:
            await self._settle_and_claim(claim=False)
        except redis.exceptions.RedisError as e:
            log.warning("could not settle the last attempts (%s); their leases will expire", e)

    def _update_capacity(self) -> None:
        metrics.IN_FLIGHT.set(len(self.running))
        if self.free_capacity() > 0:
            self.has_capacity.set()
        else:
            self.has_capacity.clear()

    def _capacity_changed(self) -> None:
        """An attempt ended or a hung thread came back: settle and claim now."""
        self._update_capacity()
        self.wake.set()

    # -- background loops ----------------------------------------------------------------------

    async def _watch_marker(self, queue: str) -> None:
        """One blocking pop per queue: a BLPOP over several queues' markers would span slots,
        which Redis Cluster refuses."""
        marker = keys.marker(self.namespace, queue)
        while True:
            await self.has_capacity.wait()
            try:
                if await self.broker.redis.blpop([marker], timeout=IDLE_WAKE_SECONDS):
                    self.wake.set()
            except redis.exceptions.RedisError as e:
                log.debug("waiting for wake-ups of %s failed: %s", queue, e)
                await asyncio.sleep(1.0)

    async def _heartbeat(self) -> None:
        """Renew the leases of running attempts every third of a lease, each renewal bounded by
        that third. While Redis refuses or hangs, keep trying; before the leases expire (after
        two thirds of a lease without a renewal, the last chance), stop (LeasesLost) rather than
        run tasks that other workers are about to take."""
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await asyncio.wait_for(self._renew_leases(), self.lease / 3)
                renewed = time.monotonic()
            except (redis.exceptions.RedisError, TimeoutError) as e:
                silent = time.monotonic() - renewed
                if self.running and silent >= self.lease * 2 / 3:
                    raise LeasesLost(
                        f"could not renew leases for {silent:.1f}s, two thirds of a lease "
                        f"({self.lease}s); last error: {e!r}"
                    ) from e
                log.warning("heartbeat failed (%r); leases expire in %.1fs", e, self.lease - silent)
            if not self.running:
                renewed = time.monotonic()

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
            try:
                lost, cancels = await self.broker.extend(self.namespace, queue, leases, self.lease)
            except BaseException:
                self.progress[queue] = {**progress, **self.progress[queue]}
                raise
            for task_id in lost:
                self._stop(task_id, "lost")
            for task_id in cancels:
                self._stop(task_id, "cancel")

    # -- running attempts ----------------------------------------------------------------------

    def _start(self, c: Claimed, queue: str) -> None:
        r = Running(c, queue)
        self.running[c.id] = r
        attempt = self._traced_attempt(r) if tracing.enabled() else self._attempt(r)
        r.task = asyncio.create_task(attempt, name=f"task-{c.id}")
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
            self.finished += 1
        self._capacity_changed()

    def _report_progress(self, queue: str, task_id: str, value: Any) -> None:
        data = dumps(value)
        if (size := size_in_bytes(data)) > MAX_PROGRESS_BYTES:
            raise ValueError(f"progress is {size} bytes as JSON, over {MAX_PROGRESS_BYTES}")
        self.progress[queue][task_id] = data

    async def _traced_attempt(self, r: Running) -> Settlement | None:
        """The attempt inside its span, current while the handler runs (so the handler's own
        spans and log lines join the task's trace)."""
        c = r.claimed
        span = tracing.start_run(
            c.traceparent,
            c.type,
            {
                "messaging.destination.name": r.queue,
                "k8s.namespace.name": self.namespace,
                "taskorch.task.id": c.id,
                "taskorch.attempt": c.attempt,
                "taskorch.worker": self.name,
            },
        )
        with tracing.activated(span):
            try:
                st = await self._attempt(r)
            except BaseException as e:
                tracing.end_run(span, "Interrupted", e)
                raise
        if st is None:
            tracing.end_run(span, "LostWorker")
            return None
        label = (st.history or {}).get("outcome", st.outcome.value)
        error = (st.history or {}).get("error") if st.outcome is not Outcome.ok else None
        tp = tracing.end_run(span, label, RuntimeError(error) if error else None)
        return dataclasses.replace(st, trace=tp) if tp else st

    async def _attempt(self, r: Running) -> Settlement | None:
        c = r.claimed
        logs.TASK_ID.set(c.id)  # this attempt's asyncio task has a context of its own
        labels = (r.queue, c.type)
        handler = self.app.handlers.get(c.type)
        raw_payload: Any = None
        secrets: list[str] = []

        def settle(
            outcome: Outcome, data: str, label: str, err: str | None = None, delay_ms: int = 0
        ) -> Settlement:
            return _settlement(c, self.name, outcome, data, label, err, delay_ms)

        def failed(exc: BaseException, reason: str) -> tuple[str, str]:
            record = error_record(exc, reason, secrets)
            return dumps(record), f"{record['type']}: {record['message']}"

        def dead(exc: BaseException, reason: str) -> Settlement:
            metrics.DEAD.labels(*labels).inc()
            data, short = failed(exc, reason)
            return settle(Outcome.dead, data, "Failed", f"{reason}: {short}")

        if handler is None:
            return self._hand_back(c, r.queue)
        try:
            raw_payload = json.loads(c.payload) if c.payload else None
            secrets = secret_values(raw_payload, c.redact)
            payload = handler.parse_payload(raw_payload)
        except (ValidationError, ValueError) as e:
            return dead(e, Reason.InvalidPayload)
        try:
            # The most specific wins: the task's own, its handler's, its queue's, the default.
            queue_retry = self.queue_retry.get(r.queue)
            policy = (
                Retry.from_spec(c.policy)
                if c.policy
                else handler.retry
                or (Retry.from_spec(queue_retry) if queue_retry else DEFAULT_RETRY)
            )
        except (ValidationError, ValueError, TypeError) as e:
            return dead(e, Reason.InvalidRetryPolicy)
        ctx = Context(
            task_id=c.id,
            type=c.type,
            namespace=self.namespace,
            queue=r.queue,
            attempt=c.attempt,
            worker=self.name,
            progress_reporter=functools.partial(self._report_progress, r.queue),
            stop_reason=lambda: r.stop_reason,
        )
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
            elapsed = time.perf_counter() - started
            metrics.FAILED.labels(*labels).inc()
            metrics.DURATION.labels(*labels).observe(elapsed)
            self._count(c.type, failed=True, seconds=elapsed)
            if isinstance(e, NonRetryable):
                return dead(e, e.reason)
            if not policy.retries(e):
                return dead(e, Reason.NonRetryableError)
            if c.failures + 1 >= (c.max_attempts or policy.max_attempts):
                return dead(e, Reason.MaxAttemptsExceeded)
            metrics.RETRIED.labels(*labels).inc()
            data, short = failed(
                e, e.reason if isinstance(e, AttemptFailed) else Reason.HandlerError
            )
            label = "TimedOut" if isinstance(e, TimeoutError) else "Failed"
            delay_ms = int(policy.delay(c.failures + 1) * 1000)
            return settle(Outcome.retry, data, label, short, delay_ms)
        elapsed = time.perf_counter() - started
        succeeded, duration = metrics.on_success(*labels)
        duration.observe(elapsed)
        try:
            data = "null" if result is None else dumps(result)
        except (TypeError, ValueError) as e:
            return dead(e, Reason.ResultNotSerializable)
        if (size := size_in_bytes(data)) > MAX_RESULT_BYTES:
            too_large = ValueError(f"result is {size} bytes as JSON, over {MAX_RESULT_BYTES}")
            return dead(too_large, Reason.ResultTooLarge)
        succeeded.inc()
        self._count(c.type, failed=False, seconds=elapsed)
        return settle(Outcome.ok, data, "Succeeded")

    def _count(self, type_: str, *, failed: bool, seconds: float) -> None:
        stats = self.type_stats.get(type_)
        if stats is None:
            if len(self.type_stats) >= MAX_TYPE_STATS:
                return  # a worker running thousands of types: the first ones are shown
            stats = self.type_stats[type_] = [0, 0, 0.0]
        stats[1 if failed else 0] += 1
        stats[2] += seconds

    def _hand_back(self, c: Claimed, queue: str) -> Settlement:
        """No handler for the type here: hand the task back for a worker that has one (a rolling
        upgrade, two apps on one queue); the queue dead-letters it as UnknownTaskType after
        `handback_limit` hand-backs."""
        metrics.REFUSED.labels(queue, c.type).inc()
        if c.type not in self.refused_types:
            self.refused_types.add(c.type)
            log.warning(
                "no handler for task type %r (queue %s): handing such tasks back; this worker "
                "has %s",
                c.type,
                queue,
                sorted(self.app.handlers),
            )
        message = f"no handler registered for task type {c.type!r} on worker {self.name}"
        data = dumps(
            {"type": "UnknownTaskType", "reason": Reason.UnknownTaskType, "message": message}
        )
        return _settlement(c, self.name, Outcome.handback, data, "Refused", message)

    async def _call(
        self, handler: Handler, ctx: Context, payload: Any, timeout: float | None
    ) -> Any:
        args = (ctx, payload) if handler.takes_payload else (ctx,)
        if handler.is_async:
            if timeout is None:
                return await handler.func(*args)
            # asyncio.timeout, not wait_for: wait_for wraps every call in another task (3.11).
            async with asyncio.timeout(timeout):
                return await handler.func(*args)
        return await self.threads.call(functools.partial(handler.func, *args), timeout)


def _settlement(
    c: Claimed,
    worker: str,
    outcome: Outcome,
    data: str,
    label: str,
    err: str | None = None,
    delay_ms: int = 0,
) -> Settlement:
    """An attempt's settlement with its history entry (the queue adds the times, from Redis)."""
    history: dict[str, Any] = {"attempt": c.attempt, "worker": worker, "outcome": label}
    if err:
        history["error"] = err[:HISTORY_ERROR_CAP]
    return Settlement(c.id, c.fence, outcome, data, delay_ms, history)


def _is_transient(e: redis.exceptions.ResponseError) -> bool:
    """Errors of the server's state, not of a task: retried as a whole, never dead-lettered."""
    text = str(e)
    return text.startswith(("OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "NOSCRIPT")) or (
        "CLUSTERDOWN" in text or "TRYAGAIN" in text
    )
