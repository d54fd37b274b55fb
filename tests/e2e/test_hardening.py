"""The hardening issue's operator defects end to end (numbers in the test names): a real API
server, the operator and workers as processes, a real Redis."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import redis

from taskorch.queue.broker import Broker
from taskorch.queue.model import State
from tests.e2e.conftest import Cluster
from tests.e2e.processes import Proc
from tests.e2e.test_tasks import apply_task, cond, task, wait_deleted, wait_phase
from tests.support import wait_for


def redis_state(redis_url: str, namespace: str, task_id: str) -> State | None:
    async def get() -> State | None:
        b = Broker.from_url(redis_url)
        try:
            info = await b.get(namespace, "default", task_id)
            return info.state if info else None
        finally:
            await b.close()

    return asyncio.run(get())


def test_5_cancelling_a_task_that_never_reached_the_queue_ends_it_cancelled(
    cluster: Cluster, namespace: str, operator: Proc, redis_url: str
) -> None:
    apply_task(cluster, namespace, "held", {"type": "noop", "suspend": True})
    wait_phase(cluster, namespace, "held", "Pending")
    secret_ref = {"field": "token", "secretKeyRef": {"name": "not-there-yet", "key": "token"}}
    apply_task(cluster, namespace, "waiting", {"type": "noop", "payloadFrom": [secret_ref]})
    waiting = wait_phase(cluster, namespace, "waiting", "Pending")
    assert cond(waiting, "Succeeded")["reason"] == "PayloadFromMissing"
    for name in ("held", "waiting"):
        cluster.kubectl(
            "patch",
            "task",
            name,
            "--type=merge",
            "-p",
            '{"spec":{"cancel":true}}',
            namespace=namespace,
        )
    for name in ("held", "waiting"):
        t = wait_phase(cluster, namespace, name, "Cancelled")
        assert cond(t, "Succeeded")["reason"] == "Cancelled"
        assert t["status"]["observedGeneration"] == t["metadata"]["generation"]
        # nothing was left in Redis that would make a later enqueue of the UID a no-op
        assert redis_state(redis_url, namespace, t["metadata"]["uid"]) is None


def test_6_a_second_task_with_a_held_idempotency_key_is_skipped_naming_the_first(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    workers()
    apply_task(cluster, namespace, "order-a", {"type": "count", "idempotencyKey": "order-42"})
    first = wait_phase(cluster, namespace, "order-a", "Succeeded")
    apply_task(cluster, namespace, "order-b", {"type": "count", "idempotencyKey": "order-42"})
    second = wait_phase(cluster, namespace, "order-b", "Skipped")
    c = cond(second, "Succeeded")
    assert (c["status"], c["reason"]) == ("False", "Duplicate")
    assert f"Task {namespace}/order-a" in c["message"] and "order-42" in c["message"]
    assert second["status"]["taskId"] == first["metadata"]["uid"]
    assert second["status"]["attempts"] == 0
    row = cluster.kubectl("get", "task", "order-b", namespace=namespace).stdout.splitlines()[1]
    assert row.split()[3] == "Skipped" and row.split()[-1] == "Duplicate"
    r = redis.Redis.from_url(redis_url)
    assert r.get(f"runs:{first['metadata']['uid']}") == b"1"
    assert r.get(f"runs:{second['metadata']['uid']}") is None
    events = cluster.get_json(
        "events", "--field-selector", "involvedObject.name=order-b", namespace=namespace
    )
    assert [e["reason"] for e in events["items"]] == ["Duplicate"]


def test_7_a_late_change_of_a_deleted_task_never_lands_on_its_successor(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    workers(TASKORCH_LEASE_SECONDS="1.5")
    apply_task(cluster, namespace, "same", {"type": "slow", "payload": {"seconds": 60}})
    old = wait_phase(cluster, namespace, "same", "Running")
    cluster.kubectl("delete", "task", "same", "--wait=true", namespace=namespace)
    apply_task(cluster, namespace, "same", {"type": "noop", "suspend": True})
    new = wait_phase(cluster, namespace, "same", "Pending")
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    # The old task is cancelled by its deletion; its "cancelled" change reaches the writer...
    wait_for(
        lambda: redis_state(redis_url, namespace, old["metadata"]["uid"]) is State.cancelled,
        timeout=30,
        what="the deleted task to be cancelled in redis",
    )
    # ...before a later task of the same queue: once that one's status is written, the old
    # change has been handled too.
    apply_task(cluster, namespace, "later", {"type": "noop"})
    wait_phase(cluster, namespace, "later", "Succeeded")
    after = task(cluster, namespace, "same")
    assert after["status"]["phase"] == "Pending", after["status"]
    assert cond(after, "Succeeded")["reason"] == "Suspended"


def test_7_a_task_requeued_from_the_dlq_is_not_deleted_by_its_old_ttl(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    workers()
    spec: dict[str, Any] = {
        "type": "fail_then_slow",
        "payload": {"seconds": 8},
        "retry": {"maxAttempts": 1},
        "ttlSecondsAfterFinished": 4,
    }
    apply_task(cluster, namespace, "revived", spec)
    dead = wait_phase(cluster, namespace, "revived", "DeadLettered")
    uid = dead["metadata"]["uid"]
    redis.Redis.from_url(redis_url).set(f"flag:{uid}", 1)
    cli = [sys.executable, "-m", "taskorch.cli", "dlq", "requeue", "-n", namespace, uid]
    subprocess.run([*cli, "--redis-url", redis_url], check=True, capture_output=True)
    # It runs for 8 s: past the TTL counted from its first completion, which must not fire.
    t = wait_phase(cluster, namespace, "revived", "Succeeded", timeout=60)
    assert t["status"]["attempts"] == 2 and t["status"]["result"] == "late"
    wait_deleted(cluster, namespace, "revived", "its TTL, counted from its second completion")


def test_14_payload_from_values_never_reach_status_or_events(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc]
) -> None:
    workers()
    secret = "tok-7f3a9c1e55"
    cluster.kubectl(
        "create", "secret", "generic", "api", f"--from-literal=token={secret}", namespace=namespace
    )
    ref = {"field": "token", "secretKeyRef": {"name": "api", "key": "token"}}
    apply_task(
        cluster,
        namespace,
        "bad-payload",
        {"type": "login", "payload": {"count": "many"}, "payloadFrom": [ref]},
    )
    apply_task(
        cluster,
        namespace,
        "echoes",
        {
            "type": "login",
            "payload": {"count": 1},
            "payloadFrom": [ref],
            "retry": {"maxAttempts": 2, "initialDelay": "100ms"},
        },
    )
    bad = wait_phase(cluster, namespace, "bad-payload", "DeadLettered")
    assert cond(bad, "Succeeded")["reason"] == "InvalidPayload"
    assert "count" in bad["status"]["lastError"]["message"]
    echoes = wait_phase(cluster, namespace, "echoes", "DeadLettered")
    assert "[redacted]" in echoes["status"]["lastError"]["message"]
    everything = cluster.kubectl("get", "tasks,events", "-o", "yaml", namespace=namespace).stdout
    assert secret not in everything
