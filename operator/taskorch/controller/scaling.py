"""A WorkerPool's replica recommendation, pure (DESIGN §4 WorkerPool, steps 1–4): what the
queue needs (backlog *and* in-flight, unlike KEDA's list-length scaler), never below the busy
workers, woken from 0 by the first task, a 10 % tolerance band, fast up, and down only to the
highest recommendation of the stabilisation window, a bounded step at a time, to 0 only after
the cooldown. The loop in controller/workerpools.py keeps the window and acts on the answer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

TOLERANCE = 0.10  # no change for a recommendation within 10 % of the current replicas
UP_STEP_FACTOR = 2  # up: at most double ...
UP_STEP_MIN = 4  # ... or +4, whichever is more, a step


@dataclass(frozen=True)
class ScalePolicy:
    min_replicas: int
    max_replicas: int
    concurrency: int  # task slots per worker
    target_utilization: float = 1.0
    activation_threshold: int = 0  # from 0, wake when backlog + in-flight exceeds this
    cooldown_seconds: float = 300.0  # to 0 only after this long without work
    stabilization_seconds: float = 300.0  # down: the highest recommendation of this window
    max_down_percent: int = 25  # down: at most this share of the replicas (at least 1) a step


@dataclass(frozen=True)
class Observation:
    backlog: int  # Q: ready tasks (and due delayed ones) of the pool's queues
    in_flight: int  # I: tasks running on the pool's workers
    busy: int  # B: workers running at least one task
    replicas: int  # R: the Deployment's current replicas
    now: float  # seconds, monotonic or epoch: only differences matter
    last_active: float | None  # when backlog + in-flight was last above 0


@dataclass(frozen=True)
class Recommendation:
    desired: int
    target: int  # before tolerance, step limits and stabilisation: what the loop remembers
    reason: str


def recommend(
    p: ScalePolicy, o: Observation, window: Sequence[tuple[float, int]]
) -> Recommendation:
    """`window`: earlier `target`s with their times (the loop keeps the last
    `stabilization_seconds` of them)."""
    demand = o.backlog + o.in_flight
    raw = math.ceil(demand / (p.concurrency * p.target_utilization)) if demand > 0 else 0
    need = (
        f"backlog {o.backlog} + in-flight {o.in_flight} "
        f"over {p.concurrency} × {p.target_utilization:g}"
    )
    target = max(min(max(raw, p.min_replicas), p.max_replicas), o.busy)
    if o.replicas == 0 and demand <= p.activation_threshold:
        target = p.min_replicas
    R = o.replicas

    if target > R:
        if R > 0 and target <= R * (1 + TOLERANCE):
            return Recommendation(R, target, f"{need} = {raw}: within the 10 % tolerance")
        step = max(R * UP_STEP_FACTOR, R + UP_STEP_MIN)
        desired = min(target, step)
        why = "activation from 0: " if R == 0 else ""
        capped = f", capped at {desired} this step" if desired < target else ""
        return Recommendation(desired, target, f"{why}{need} = {raw}{capped}")

    if target < R:
        recent = [t for at, t in window if o.now - at <= p.stabilization_seconds]
        stabilized = max([target, *recent])
        idle = o.now - o.last_active if o.last_active is not None else math.inf
        if stabilized == 0 and idle < p.cooldown_seconds:
            stabilized = 1
            held = f"cooldown: idle for {idle:.0f}s of {p.cooldown_seconds:g}s"
        else:
            held = (
                f"stabilization: {stabilized} recommended in the last {p.stabilization_seconds:g}s"
            )
        if stabilized >= R:
            return Recommendation(R, target, f"{need} = {raw}; holding for {held}")
        if stabilized > 0 and R - stabilized <= R * TOLERANCE:
            return Recommendation(R, target, f"{need} = {raw}: within the 10 % tolerance")
        step = max(1, math.ceil(R * p.max_down_percent / 100))
        desired = max(stabilized, R - step)
        capped = f", {step} at most a step" if desired > stabilized else ""
        return Recommendation(desired, target, f"{need} = {raw}; down to {desired}{capped}")

    return Recommendation(R, target, f"{need} = {raw}")
