"""The WorkerPool recommendation (controller/scaling.py), by table, including the complaints
about KEDA's queue scalers that it answers."""

from __future__ import annotations

import pytest

from taskorch.controller.scaling import Observation, ScalePolicy, recommend

POLICY = ScalePolicy(
    min_replicas=0,
    max_replicas=20,
    concurrency=16,
    cooldown_seconds=60,
    stabilization_seconds=30,
)


def obs(
    backlog: int = 0,
    in_flight: int = 0,
    busy: int = 0,
    replicas: int = 0,
    now: float = 1000.0,
    last_active: float | None = 1000.0,
) -> Observation:
    return Observation(backlog, in_flight, busy, replicas, now, last_active)


@pytest.mark.parametrize(
    ("o", "window", "desired"),
    [
        # idle and at 0: stays at 0
        (obs(last_active=None), [], 0),
        # the first task wakes one replica at once (activation), even below a worker's capacity
        (obs(backlog=1), [], 1),
        # a burst on an idle pool: wakes at once, at most +4 from 0 ...
        (obs(backlog=500), [], 4),
        # ... then doubles each poll towards ceil(500 / 16) = 32, capped at max 20
        (obs(backlog=500, replicas=4), [], 8),
        (obs(backlog=500, replicas=16), [], 20),
        # in-flight work counts (KEDA's list scaler sees only the backlog: kedacore/keda#5190)
        (obs(backlog=0, in_flight=64, busy=4, replicas=4), [], 4),
        # never below the busy workers, whatever the backlog says (KEDA kills busy workers)
        (obs(backlog=0, in_flight=3, busy=3, replicas=3, now=2000), [], 3),
        # within 10 %: no change (no flapping on small backlog swings)
        (obs(backlog=16 * 10 + 5, replicas=10), [], 10),
        # down: only to the highest recommendation of the stabilization window ...
        (obs(backlog=16 * 2, replicas=10), [(990.0, 8)], 8),
        # ... which forgets what is older than the window (then 25 % of 10, rounded up)
        (obs(backlog=16 * 5, replicas=10), [(900.0, 10)], 7),
        # ... and at most max(1, 25 %) a step
        (obs(backlog=16 * 1, replicas=12), [], 9),
        (obs(backlog=16 * 1, replicas=3), [], 2),
        # no work left, but inside the cooldown: holds one replica
        (obs(replicas=1, now=1030, last_active=1000), [], 1),
        (obs(replicas=4, now=1030, last_active=1000), [], 3),
        # past the cooldown (and the window): to 0
        (obs(replicas=1, now=1100, last_active=1000), [], 0),
        # minReplicas holds
        (obs(replicas=2, now=5000, last_active=None), [], 2),
    ],
)
def test_recommend(o: Observation, window: list[tuple[float, int]], desired: int) -> None:
    policy = POLICY
    if o.replicas == 2 and o.last_active is None:
        policy = ScalePolicy(min_replicas=2, max_replicas=20, concurrency=16)
    got = recommend(policy, o, window)
    assert got.desired == desired, got.reason


def test_the_reason_says_why() -> None:
    got = recommend(POLICY, obs(backlog=480, in_flight=32, replicas=8), [])
    assert got.reason.startswith("backlog 480 + in-flight 32 over 16 × 1 = 32")
    assert "capped at 16" in got.reason
    held = recommend(POLICY, obs(replicas=1, now=1030, last_active=1000), [])
    assert "cooldown" in held.reason


def test_activation_threshold_keeps_a_pool_asleep_for_a_trickle() -> None:
    lazy = ScalePolicy(min_replicas=0, max_replicas=5, concurrency=4, activation_threshold=10)
    assert recommend(lazy, obs(backlog=10), []).desired == 0
    assert recommend(lazy, obs(backlog=11), []).desired == 3


def test_target_utilization_leaves_headroom() -> None:
    half = ScalePolicy(min_replicas=0, max_replicas=50, concurrency=10, target_utilization=0.5)
    assert recommend(half, obs(backlog=100, replicas=20), []).target == 20
    assert recommend(half, obs(backlog=101, replicas=20), []).target == 21


def test_a_run_of_polls_scales_down_in_bounded_steps_then_to_zero() -> None:
    """Simulates the loop: work stops at t=0 with 16 replicas; each 5 s poll keeps the window."""
    policy = ScalePolicy(
        min_replicas=0,
        max_replicas=20,
        concurrency=16,
        cooldown_seconds=60,
        stabilization_seconds=20,
    )
    replicas, window, t = 16, [(-5.0, 16)], 0.0
    seen = [replicas]
    while t < 200:
        t += 5
        rec = recommend(policy, obs(replicas=replicas, now=t, last_active=0.0), window)
        window = [(at, v) for at, v in [*window, (t, rec.target)] if t - at <= 20]
        if rec.desired != replicas:
            assert replicas - rec.desired <= max(1, -(-replicas * 25 // 100)), (replicas, rec)
            replicas = rec.desired
            seen.append(replicas)
    assert seen[-1] == 0 and seen[-2] == 1
    assert t >= 60  # not before the cooldown
