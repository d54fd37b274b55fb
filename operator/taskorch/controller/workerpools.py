"""WorkerPool glue: one poll per pool every `pollInterval` reads the queues (backlog, in-flight)
and the pool's workers (busy, idle) from Redis, asks controller/scaling.py for the replica
count, and applies it to the Deployment's /scale, draining before it shrinks (DESIGN §4 step 5):

1. mark k idle workers `stop` (queue/workers.py); they stop claiming;
2. on a later poll, once k of them acknowledged with nothing running, give their pods the
   lowest `controller.kubernetes.io/pod-deletion-cost`, then shrink by k: the ReplicaSet
   removes those pods (and the workers drain on SIGTERM, with nothing left to drain).

Redis unreachable: replicas are held and MetricsAvailable=False; never a scale-down on an
error. `spec.replicas` set (an HPA or KEDA owns /scale): its count is applied, drained the same
way, and ScalingActive=False says the built-in scaler stands aside. No finalizer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
import redis.exceptions
from kubernetes.client.exceptions import ApiException
from prometheus_client import Gauge
from pydantic import ValidationError

from taskorch.api.base import GROUP, VERSION, duration_seconds
from taskorch.api.reasons import Reason
from taskorch.api.workerpool import ScaleDown, WorkerPoolSpec, WorkerPoolStatus
from taskorch.controller.kube import KubeAPI
from taskorch.controller.scaling import Observation, ScalePolicy, recommend
from taskorch.controller.status import held_condition
from taskorch.queue.broker import Broker
from taskorch.queue.inspect import Inspector
from taskorch.queue.workers import WorkerPresence, clear_stop, mark_stop, read_workers

log = logging.getLogger("taskorch.workerpools")
RESOURCE = (GROUP, VERSION, "workerpools")
PLURAL = "workerpools"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
DRAINED_COST = "-1000"  # removed first by the ReplicaSet
# A marked worker that stays busy this long is released and another is picked.
MARK_TIMEOUT_SECONDS = 60.0
REDIS_ERRORS = (redis.exceptions.RedisError, OSError)
PoolRef = tuple[str, str]

LABELS = ("namespace", "pool")
DESIRED = Gauge("taskorch_pool_desired_replicas", "Replicas the scaler wants.", LABELS)
REPLICAS = Gauge("taskorch_pool_replicas", "The worker Deployment's replicas.", LABELS)
BACKLOG = Gauge("taskorch_pool_backlog", "Ready tasks of the pool's queues.", LABELS)
IN_FLIGHT = Gauge("taskorch_pool_in_flight", "Running tasks of the pool's queues.", LABELS)
BUSY = Gauge("taskorch_pool_busy_workers", "The pool's workers running a task.", LABELS)
MAX = Gauge("taskorch_pool_max_replicas", "The pool's maxReplicas.", LABELS)


@dataclass
class Pool:
    body: dict[str, Any]
    window: list[tuple[float, int]] = field(default_factory=list)
    last_active: float | None = None
    marks: dict[str, float] = field(default_factory=dict)  # worker → when it was marked
    costed: set[str] = field(default_factory=set)  # pods given the drained deletion cost
    status: dict[str, Any] = field(default_factory=dict)
    next_poll: float = 0.0


@dataclass(frozen=True)
class Measured:
    replicas: int
    selector: str
    backlog: int
    in_flight: int
    workers: list[WorkerPresence]  # the pool's (their pods are the Deployment's)
    pods: list[str]


class WorkerPoolRunner:
    def __init__(self, broker: Broker, kube: KubeAPI) -> None:
        self.broker = broker
        self.kube = kube
        self.inspector = Inspector(broker)
        self.pools: dict[PoolRef, Pool] = {}
        self.wake = asyncio.Event()

    async def on_event(self, type_: str | None, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        ref = (meta["namespace"], meta["name"])
        if type_ == "DELETED":
            pool = self.pools.pop(ref, None)
            if pool and pool.marks:
                with contextlib.suppress(*REDIS_ERRORS):
                    await clear_stop(self.broker.redis, ref[0], pool.marks)
            for gauge in (DESIRED, REPLICAS, BACKLOG, IN_FLIGHT, BUSY, MAX):
                with contextlib.suppress(KeyError):
                    gauge.remove(*ref)
            return
        pool = self.pools.get(ref)
        if pool is None or pool.body["metadata"]["uid"] != meta["uid"]:
            self.pools[ref] = Pool(body, status=dict(body.get("status") or {}))
        else:
            changed = pool.body["metadata"].get("generation") != meta.get("generation")
            pool.body = body
            if not changed:
                return  # our own status write
            pool.next_poll = 0.0
        self.wake.set()

    async def run(self) -> None:
        while True:
            now = time.monotonic()
            for ref, pool in list(self.pools.items()):
                if pool.next_poll <= now:
                    try:
                        await self.poll(ref, pool)
                    except Exception:  # one pool's trouble (API, Redis) must not stop the rest
                        log.exception("workerpool %s/%s: poll failed; next poll retries", *ref)
                    pool.next_poll = now + self._interval(pool)
            upcoming = min((p.next_poll for p in self.pools.values()), default=now + 1)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(0.05, min(1.0, upcoming - now)))

    def _interval(self, pool: Pool) -> float:
        try:
            return duration_seconds(pool.body["spec"].get("pollInterval") or "5s")
        except ValueError:
            return 5.0

    async def poll(self, ref: PoolRef, pool: Pool) -> None:
        try:
            spec = WorkerPoolSpec.model_validate(pool.body.get("spec") or {})
        except ValidationError as e:
            await self._write(
                ref, pool, {}, [("ScalingActive", "False", Reason.InvalidSpec, str(e))]
            )
            return
        deployment = spec.scale_target_ref.name
        scale = await self.kube.read_scale(ref[0], deployment)
        if scale is None:
            message = f"deployment {ref[0]}/{deployment} not found"
            await self._write(
                ref, pool, {}, [("ScalingActive", "False", Reason.DeploymentNotFound, message)]
            )
            return
        replicas, selector = scale
        try:
            m = await self._measure(ref[0], spec, replicas, selector)
        except REDIS_ERRORS as e:
            # Hold: never scale (least of all down) on a missing measurement.
            await self._write(
                ref,
                pool,
                {"replicas": replicas, "selector": selector},
                [("MetricsAvailable", "False", Reason.RedisUnreachable, f"redis: {e}")],
            )
            return
        now = time.monotonic()
        if m.backlog + m.in_flight > 0 or pool.last_active is None:
            pool.last_active = now  # (from the operator's start: a cooldown it did not see)
        busy = sum(1 for w in m.workers if w.running > 0)
        down = spec.scale_down or ScaleDown()
        policy = ScalePolicy(
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
            concurrency=spec.concurrency,
            target_utilization=spec.target_utilization,
            activation_threshold=spec.activation_threshold,
            cooldown_seconds=spec.cooldown_seconds,
            stabilization_seconds=down.stabilization_window_seconds,
            max_down_percent=down.max_step_percent,
        )
        obs = Observation(m.backlog, m.in_flight, busy, replicas, now, pool.last_active)
        rec = recommend(policy, obs, pool.window)
        pool.window = [
            (t, v)
            for t, v in [*pool.window, (now, rec.target)]
            if now - t <= policy.stabilization_seconds
        ]
        if spec.replicas is not None:
            # An HPA or KEDA owns the count; the recommendation is still served (for KEDA's
            # metrics-api scaler) and shown, but not applied.
            desired, reason = spec.replicas, f"replicas {spec.replicas} set through /scale"
            scaling = ("ScalingActive", "False", Reason.ExternalOwner, reason)
        else:
            desired, reason = rec.desired, rec.reason
            scaling = ("ScalingActive", "True", Reason.Scaling, "the built-in scaler owns replicas")
        new_replicas, scaled = await self._apply(ref, pool, m, desired, reason)
        numbers = {
            "replicas": new_replicas,
            "desired": desired,
            "recommended": rec.desired,
            "backlog": m.backlog,
            "inFlight": m.in_flight,
            "busy": busy,
            "workers": len(m.workers),
            "selector": selector,
        }
        if scaled:
            numbers["lastScaleTime"] = (
                datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
            )
            numbers["lastScaleReason"] = scaled
        labels = ref
        DESIRED.labels(*labels).set(desired)
        REPLICAS.labels(*labels).set(new_replicas)
        BACKLOG.labels(*labels).set(m.backlog)
        IN_FLIGHT.labels(*labels).set(m.in_flight)
        BUSY.labels(*labels).set(busy)
        MAX.labels(*labels).set(spec.max_replicas)
        metrics = ("MetricsAvailable", "True", Reason.MetricsAvailable, "queues read from redis")
        await self._write(ref, pool, numbers, [metrics, scaling])

    async def _measure(
        self, namespace: str, spec: WorkerPoolSpec, replicas: int, selector: str
    ) -> Measured:
        backlog = in_flight = 0
        for q in spec.queues:
            s = await self.inspector.stats(namespace, q)
            in_flight += s.active
            if not s.paused:  # a paused queue's backlog needs no workers until it resumes
                # due delayed tasks (runAt, retries) count: only a worker's claim makes them
                # ready, so a pool at 0 would otherwise never wake for them
                backlog += s.ready + await self.inspector.due(namespace, q)
        pods = [name for name, _ in await self.kube.pods(namespace, selector)] if selector else []
        live = set(pods)
        workers = [w for w in await read_workers(self.broker.redis, namespace) if w.pod in live]
        return Measured(replicas, selector, backlog, in_flight, workers, pods)

    async def _apply(
        self, ref: PoolRef, pool: Pool, m: Measured, desired: int, reason: str
    ) -> tuple[int, str]:
        """Move the Deployment towards `desired`; returns its replicas now and what was done."""
        ns, deployment = ref[0], pool.body["spec"]["scaleTargetRef"]["name"]
        R = m.replicas
        for w in m.workers:  # marks left by an earlier operator (a restart mid-drain): ours now
            if w.stop and w.name not in pool.marks:
                pool.marks[w.name] = time.monotonic()
        if desired >= R:
            await self._release(ns, pool, set(pool.marks))
            if desired > R:
                await self.kube.patch_scale(ns, deployment, desired)
                done = f"scaled up {R} → {desired}: {reason}"
                await self._event(pool, "Normal", "ScaledUp", done)
                return desired, done
            return R, ""
        # Shrinking by k: only pods without a worker, or whose worker is drained.
        k = R - desired
        by_name = {w.name: w for w in m.workers}
        with_worker = {w.pod for w in m.workers}
        empty_pods = [p for p in m.pods if p not in with_worker]
        drained = [w for w in m.workers if w.name in pool.marks and w.drained]
        removable = [*empty_pods, *(w.pod for w in drained)][:k]
        if len(removable) >= k:
            for pod in removable:
                await self.kube.annotate_pod(ns, pod, DELETION_COST, DRAINED_COST)
                pool.costed.add(pod)
            await self.kube.patch_scale(ns, deployment, R - k)
            gone = {w.name for w in drained if w.pod in removable}
            for name in gone:
                pool.marks.pop(name, None)
            done = f"scaled down {R} → {R - k} (idle workers drained first): {reason}"
            await self._event(pool, "Normal", "ScaledDown", done)
            return R - k, done
        # Not enough drained yet: mark idle ones (and give up on marks that stayed busy).
        now = time.monotonic()
        stale = {
            n
            for n, t in pool.marks.items()
            if n not in by_name or (now - t > MARK_TIMEOUT_SECONDS and by_name[n].running)
        }
        await self._release(ns, pool, stale)
        want = k - len(empty_pods) - len(pool.marks)
        idle = [w for w in m.workers if w.running == 0 and w.name not in pool.marks]
        chosen = [w.name for w in idle[: max(0, want)]]
        if chosen:
            mark = str(int(time.time() * 1000))
            await mark_stop(self.broker.redis, ns, chosen, mark)
            for name in chosen:
                pool.marks[name] = now
            log.info("workerpool %s/%s: draining %s before scaling down", *ref, chosen)
        return R, ""

    async def _release(self, namespace: str, pool: Pool, names: set[str]) -> None:
        """Clear marks (the workers claim again) and the deletion cost of their pods."""
        if not names:
            return
        with contextlib.suppress(*REDIS_ERRORS):
            await clear_stop(self.broker.redis, namespace, names)
        for name in names:
            pool.marks.pop(name, None)
        for pod in list(pool.costed):
            await self.kube.annotate_pod(namespace, pod, DELETION_COST, None)
            pool.costed.discard(pod)

    async def _write(
        self,
        ref: PoolRef,
        pool: Pool,
        numbers: dict[str, Any],
        conditions: list[tuple[str, str, str, str]],
    ) -> None:
        meta = pool.body["metadata"]
        generation = meta.get("generation")
        prior = pool.status.get("conditions") or []
        given = {c[0] for c in conditions}
        # a condition this poll could not judge keeps its last value
        conds: list[Any] = [c for c in prior if c["type"] not in given]
        now_ms = int(time.time() * 1000)
        for type_, state, reason, message in conditions:
            conds.append(held_condition(prior, type_, state, reason, message, generation, now_ms))
        kept = {k: v for k, v in pool.status.items() if k in ("lastScaleTime", "lastScaleReason")}
        status = WorkerPoolStatus.model_validate(
            {**kept, **numbers, "conditions": conds, "observedGeneration": generation}
        ).model_dump(by_alias=True, mode="json", exclude_none=True)
        if status != pool.status and await self.kube.patch_status(
            PLURAL, *ref, meta["uid"], status
        ):
            pool.status = status

    async def _event(self, pool: Pool, type_: str, reason: str, message: str) -> None:
        meta = pool.body["metadata"]
        try:
            await self.kube.event(
                "WorkerPool", meta["namespace"], meta["name"], meta["uid"], type_, reason, message
            )
        except (ApiException, OSError) as e:
            log.debug("event not posted: %s", e)


@kopf.on.event(*RESOURCE)
async def workerpool_event(
    event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """Every watch event of a WorkerPool (no finalizer, no kopf bookkeeping on the object)."""
    await memo.workerpools.on_event(event.get("type"), dict(body))
