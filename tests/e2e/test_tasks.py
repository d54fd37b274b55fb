"""Task end to end: kubectl apply → operator → Redis → worker → status, on a real API server."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import yaml

from taskorch.queue.broker import Broker
from taskorch.queue.policy import QueuePolicy
from tests.e2e.conftest import Cluster
from tests.e2e.processes import Proc, start_operator
from tests.support import REPO, RedisServer, wait_for


def apply_task(cluster: Cluster, namespace: str, name: str, spec: dict[str, Any]) -> None:
    doc = {
        "apiVersion": "taskorch.io/v1alpha1",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": spec,
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), namespace=namespace)


def task_docs(names: list[str], spec: dict[str, Any]) -> str:
    """Tasks of one spec, as one multi-document YAML for a single `kubectl apply`."""
    docs = [
        {
            "apiVersion": "taskorch.io/v1alpha1",
            "kind": "Task",
            "metadata": {"name": n},
            "spec": spec,
        }
        for n in names
    ]
    return yaml.safe_dump_all(docs)


def wait_deleted(cluster: Cluster, namespace: str, name: str, what: str) -> None:
    wait_for(
        lambda: cluster.kubectl("get", "task", name, namespace=namespace, check=False).returncode,
        timeout=30,
        what=what,
    )


def task(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(cluster.get_json(f"task/{name}", namespace=namespace))


def wait_object(
    cluster: Cluster,
    namespace: str,
    ref: str,
    test: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = 60,
) -> dict[str, Any]:
    """`kind/name` once `test` holds for it."""

    def probe() -> dict[str, Any] | None:
        obj = dict(cluster.get_json(ref, namespace=namespace))
        return obj if test(obj) else None

    return wait_for(probe, timeout=timeout, what=f"{ref} {what}")


def wait_phase(
    cluster: Cluster, namespace: str, name: str, phase: str, timeout: float = 60
) -> dict[str, Any]:
    def reached(t: dict[str, Any]) -> bool:
        return bool(t.get("status", {}).get("phase") == phase)

    return wait_object(cluster, namespace, f"task/{name}", reached, f"to reach {phase}", timeout)


def cond(t: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in t["status"]["conditions"] if c["type"] == type_)


def redis_history(redis_url: str, namespace: str, task_id: str) -> list[dict[str, Any]]:
    async def get() -> list[dict[str, Any]]:
        b = Broker.from_url(redis_url)
        try:
            info = await b.get(namespace, "default", task_id)
            assert info is not None
            return info.history
        finally:
            await b.close()

    return asyncio.run(get())


def test_apply_example_to_succeeded(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc]
) -> None:
    workers()
    cluster.kubectl("apply", "-f", str(REPO / "examples" / "task.yaml"), namespace=namespace)
    cluster.kubectl(
        "wait", "--for=condition=Succeeded", "task/resize-1", "--timeout=60s", namespace=namespace
    )
    t = task(cluster, namespace, "resize-1")
    assert t["status"]["phase"] == "Succeeded"
    assert t["status"]["attempts"] == 1
    assert t["status"]["result"]["thumbnail"] == "s3://photos/cat.png.640x480.jpg"
    assert t["status"]["observedGeneration"] == t["metadata"]["generation"]
    table = cluster.kubectl("get", "tasks", namespace=namespace).stdout
    header, row = table.splitlines()[:2]
    assert header.split() == [
        "NAME",
        "TYPE",
        "QUEUE",
        "PHASE",
        "ATTEMPTS",
        "AGE",
        "DURATION",
        "REASON",
    ]
    assert row.split()[:5] == ["resize-1", "process_image", "default", "Succeeded", "1"]
    assert "resize-1" in cluster.kubectl("get", "taskorch", namespace=namespace).stdout


FAST_RETRY = {"maxAttempts": 3, "initialDelay": "200ms", "maxDelay": "10s", "jitter": False}


def test_failing_twice_then_succeeding(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc]
) -> None:
    workers()
    apply_task(
        cluster,
        namespace,
        "flaky",
        {"type": "flaky", "payload": {"fail_times": 2}, "retry": FAST_RETRY},
    )
    t = wait_phase(cluster, namespace, "flaky", "Succeeded")
    assert t["status"]["attempts"] == 3
    assert [h["outcome"] for h in t["status"]["history"]] == ["Failed", "Failed", "Succeeded"]
    assert t["status"]["result"] == {"succeeded_on": 3}
    events = cluster.get_json(
        "events", "--field-selector", "involvedObject.name=flaky", namespace=namespace
    )
    assert sum(e["reason"] == "Retrying" for e in events["items"]) >= 1
    described = cluster.kubectl("describe", "task", "flaky", namespace=namespace).stdout
    assert "Retrying" in described and "History" in described


def test_always_failing_dead_letters_and_cli_requeue_revives(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    workers()
    apply_task(
        cluster,
        namespace,
        "doomed",
        {"type": "fail_until_flag", "retry": {**FAST_RETRY, "maxAttempts": 4}},
    )
    t = wait_phase(cluster, namespace, "doomed", "DeadLettered")
    assert t["status"]["attempts"] == 4
    assert cond(t, "Succeeded")["status"] == "False"
    dl = cond(t, "DeadLettered")
    assert (dl["status"], dl["reason"]) == ("True", "MaxAttemptsExceeded")
    assert t["status"]["lastError"]["type"] == "RuntimeError"
    history = redis_history(redis_url, namespace, t["metadata"]["uid"])
    gaps = [b["startTime"] - a["finishTime"] for a, b in itertools.pairwise(history)]
    assert len(gaps) == 3 and gaps[0] < gaps[1] < gaps[2], f"backoff gaps should grow: {gaps}"

    uid = t["metadata"]["uid"]
    redis.Redis.from_url(redis_url).set(f"flag:{uid}", 1)
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskorch.cli",
            "dlq",
            "requeue",
            "-n",
            namespace,
            "--redis-url",
            redis_url,
            uid,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "requeued 1" in cli.stdout
    t = wait_phase(cluster, namespace, "doomed", "Succeeded")
    assert t["status"]["attempts"] == 5 and t["status"]["result"] == "revived"


def test_worker_killed_mid_task_completes_elsewhere(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc]
) -> None:
    first = workers(TASKORCH_LEASE_SECONDS="2")
    apply_task(cluster, namespace, "long", {"type": "slow", "payload": {"seconds": 1.5}})
    running = wait_phase(cluster, namespace, "long", "Running")
    first.kill()
    second = workers(TASKORCH_LEASE_SECONDS="2")
    t = wait_phase(cluster, namespace, "long", "Succeeded")
    assert t["status"]["attempts"] == 2
    outcomes = [h["outcome"] for h in t["status"]["history"]]
    assert outcomes == ["LostWorker", "Succeeded"]
    assert t["status"]["worker"] != running["status"]["worker"]
    assert second.process is not None


def test_operator_restart_mid_flight_loses_nothing(
    cluster: Cluster, namespace: str, redis_url: str, tmp_path: Path, workers: Callable[..., Proc]
) -> None:
    op = start_operator(redis_url, cluster.kubeconfig, tmp_path / "op1.log")
    workers(concurrency=8)
    names = [f"job-{i}" for i in range(20)]
    docs = task_docs(names, {"type": "slow", "payload": {"seconds": 0.3}})
    cluster.kubectl("apply", "-f", "-", input=docs, namespace=namespace)
    wait_for(
        lambda: any(
            t.get("status", {}).get("phase")
            for t in cluster.get_json("tasks", namespace=namespace)["items"]
        ),
        what="the operator to start handling tasks",
    )
    op.kill()
    op = start_operator(redis_url, cluster.kubeconfig, tmp_path / "op2.log")
    try:

        def all_done() -> list[dict[str, Any]] | None:
            items = cluster.get_json("tasks", namespace=namespace)["items"]
            done = [t for t in items if t.get("status", {}).get("phase") == "Succeeded"]
            return items if len(done) == len(names) else None

        items = wait_for(all_done, timeout=90, what="all 20 tasks Succeeded")
        assert all(t["status"]["attempts"] == 1 for t in items)
    finally:
        op.kill()


def test_second_apply_runs_once(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    workers()
    spec = {"type": "count"}
    apply_task(cluster, namespace, "once", spec)
    apply_task(cluster, namespace, "once", spec)
    t = wait_phase(cluster, namespace, "once", "Succeeded")
    apply_task(cluster, namespace, "once", spec)
    assert t["status"]["result"] == 1
    assert redis.Redis.from_url(redis_url).get(f"runs:{t['metadata']['uid']}") == b"1"


def refused(cluster: Cluster, namespace: str, spec: dict[str, Any]) -> str:
    doc = {
        "apiVersion": "taskorch.io/v1alpha1",
        "kind": "Task",
        "metadata": {"name": "bad"},
        "spec": spec,
    }
    proc = cluster.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(doc), namespace=namespace, check=False
    )
    assert proc.returncode != 0, f"apply of {spec} should be refused"
    return proc.stderr


def test_bad_input_is_refused_at_apply_naming_the_field(cluster: Cluster, namespace: str) -> None:
    assert "set exactly one of type (a handler), command and container" in refused(
        cluster, namespace, {"queue": "default"}
    )
    err = refused(cluster, namespace, {"type": "t", "priority": "urgent"})
    assert "spec.priority" in err and "high, normal, low" in err
    err = refused(
        cluster, namespace, {"type": "t", "retry": {"initialDelay": "10m", "maxDelay": "1m"}}
    )
    assert "spec.retry.initialDelay" in err and "must not exceed maxDelay" in err
    err = refused(cluster, namespace, {"type": "t", "retry": {"maxAttempts": 0}})
    assert "spec.retry.maxAttempts" in err
    err = refused(cluster, namespace, {"type": "t", "delay": "5s", "runAt": "2030-01-01T00:00:00Z"})
    assert "at most one of runAt and delay" in err
    assert "spec.timeout" in refused(cluster, namespace, {"type": "t", "timeout": "soon"})
    # immutability: a created Task's spec cannot be edited, except cancel
    apply_task(cluster, namespace, "frozen", {"type": "t", "suspend": True, "payload": {"a": 1}})
    patch = json.dumps({"spec": {"payload": {"a": 2}}})
    proc = cluster.kubectl(
        "patch", "task", "frozen", "--type=merge", "-p", patch, namespace=namespace, check=False
    )
    assert proc.returncode != 0 and "immutable" in proc.stderr
    swap = json.dumps({"spec": {"type": None, "command": ["true"]}})  # another kind of work
    proc = cluster.kubectl(
        "patch", "task", "frozen", "--type=merge", "-p", swap, namespace=namespace, check=False
    )
    assert proc.returncode != 0 and "immutable" in proc.stderr
    cancel = json.dumps({"spec": {"cancel": True, "suspend": False}})  # the two that may change
    cluster.kubectl("patch", "task", "frozen", "--type=merge", "-p", cancel, namespace=namespace)


def test_unknown_type_and_bad_payload_are_dead_lettered_with_reason(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    # fewer and faster hand-backs than the defaults (5, from 1 s doubling): the queue's policy
    fast = QueuePolicy(handback_limit=2, handback_delay_seconds=0.2)

    async def configure() -> None:
        broker = Broker.from_url(redis_url)
        try:
            await broker.configure(namespace, "default", fast)
        finally:
            await broker.close()

    asyncio.run(configure())
    workers()
    apply_task(cluster, namespace, "mystery", {"type": "no_such_handler"})
    apply_task(
        cluster, namespace, "badpayload", {"type": "process_image", "payload": {"width": "big"}}
    )
    t = wait_phase(cluster, namespace, "mystery", "DeadLettered")
    assert cond(t, "DeadLettered")["reason"] == "UnknownTaskType"
    # Handed back twice for a worker that has the handler, then dead-lettered: never run.
    assert t["status"]["attempts"] == 0
    assert [h["outcome"] for h in t["status"]["history"]] == ["Refused"] * 3
    t = wait_phase(cluster, namespace, "badpayload", "DeadLettered")
    assert cond(t, "Succeeded")["reason"] == "InvalidPayload"
    assert "image_url" in t["status"]["lastError"]["message"]


def test_redis_outage_loses_nothing(
    cluster: Cluster,
    namespace: str,
    operator: Proc,
    workers: Callable[..., Proc],
    redis_server: RedisServer,
) -> None:
    workers()
    redis_server.stop()
    stopped = time.monotonic()
    names = [f"during-outage-{i}" for i in range(5)]
    for n in names:
        apply_task(cluster, namespace, n, {"type": "noop"})

    def unavailable(name: str) -> bool:
        conds = task(cluster, namespace, name).get("status", {}).get("conditions", [])
        return any(c["type"] == "QueueUnavailable" and c["status"] == "True" for c in conds)

    # An outage of at least 10 s, during which every Task says why it waits.
    wait_for(
        lambda: time.monotonic() - stopped >= 10 and all(unavailable(n) for n in names),
        timeout=60,
        what="10 s of outage with QueueUnavailable on every task",
    )
    redis_server.start()
    for n in names:
        t = wait_phase(cluster, namespace, n, "Succeeded", timeout=90)
        assert not any(c["type"] == "QueueUnavailable" for c in t["status"]["conditions"])


def test_cancel_running_task(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc]
) -> None:
    workers(TASKORCH_LEASE_SECONDS="1.5")
    apply_task(cluster, namespace, "stopme", {"type": "slow", "payload": {"seconds": 60}})
    wait_phase(cluster, namespace, "stopme", "Running")
    cluster.kubectl(
        "patch",
        "task",
        "stopme",
        "--type=merge",
        "-p",
        '{"spec":{"cancel":true}}',
        namespace=namespace,
    )
    t = wait_phase(cluster, namespace, "stopme", "Cancelled", timeout=30)
    assert cond(t, "Succeeded")["reason"] == "Cancelled"


def test_ttl_after_finished_deletes_the_task(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc]
) -> None:
    workers()
    apply_task(cluster, namespace, "ephemeral", {"type": "noop", "ttlSecondsAfterFinished": 5})
    # 5 s of TTL: long enough that polling sees Succeeded before the deletion.
    wait_phase(cluster, namespace, "ephemeral", "Succeeded")
    wait_deleted(cluster, namespace, "ephemeral", "the finished task to be deleted by its TTL")


def test_deleting_a_running_task_cancels_it_and_needs_no_finalizer(
    cluster: Cluster,
    namespace: str,
    operator: Proc,
    workers: Callable[..., Proc],
    redis_url: str,
) -> None:
    workers(TASKORCH_LEASE_SECONDS="1.5")
    apply_task(cluster, namespace, "unwanted", {"type": "slow", "payload": {"seconds": 60}})
    t = wait_phase(cluster, namespace, "unwanted", "Running")
    assert not t["metadata"].get("finalizers"), "a Task must stay deletable without the operator"
    cluster.kubectl("delete", "task", "unwanted", "--wait=true", namespace=namespace)

    async def state() -> str | None:
        b = Broker.from_url(redis_url)
        try:
            info = await b.get(namespace, "default", t["metadata"]["uid"])
            return info.state.value if info else None
        finally:
            await b.close()

    wait_for(
        lambda: asyncio.run(state()) == "cancelled",
        timeout=30,
        what="the deleted task to be cancelled in redis",
    )


def test_task_lost_by_redis_is_enqueued_again(
    cluster: Cluster,
    namespace: str,
    redis_url: str,
    tmp_path: Path,
    workers: Callable[..., Proc],
) -> None:
    op = start_operator(
        redis_url, cluster.kubeconfig, tmp_path / "op.log", TASKORCH_RESYNC_SECONDS="1"
    )
    try:
        apply_task(cluster, namespace, "amnesia", {"type": "count"})
        wait_phase(cluster, namespace, "amnesia", "Queued")
        redis.Redis.from_url(redis_url).flushall()  # Redis restarted without its data
        workers()
        t = wait_phase(cluster, namespace, "amnesia", "Succeeded")
        assert t["status"]["result"] == 1
        assert "enqueueing it again" in op.logs()
    finally:
        op.kill()


def test_kubectl_explain_reads_the_model_descriptions(cluster: Cluster) -> None:
    def explain(path: str) -> str | None:
        # The API server publishes a new CRD's OpenAPI a few seconds after it is Established.
        proc = cluster.kubectl("explain", path, check=False)
        return " ".join(proc.stdout.split()) if proc.returncode == 0 else None  # unwrapped

    retry = wait_for(lambda: explain("task.spec.retry"), timeout=60, what="task's OpenAPI")
    assert "Retry policy; when unset the handler's own policy applies" in retry
    assert "maxAttempts" in retry and "Handler attempts in all, the first one included." in retry
    status = wait_for(lambda: explain("task.status.phase"), what="explain task.status.phase")
    assert "Where the task is now." in status


def test_large_result_is_referenced_and_readable_with_the_cli(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    workers()
    apply_task(cluster, namespace, "big", {"type": "big_result", "payload": {"items": 1000}})
    t = wait_phase(cluster, namespace, "big", "Succeeded")
    assert t["status"].get("result") is None, "a result over 4 KiB stays out of the status"
    ref = t["status"]["resultRef"]
    assert ref == f"redis:{namespace}/default/{t['metadata']['uid']}"
    cli = subprocess.run(
        [sys.executable, "-m", "taskorch.cli", "result", "--redis-url", redis_url, ref],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(cli.stdout)
    assert len(result) == 1000 and result[-1] == "item-00999"


def test_payload_over_the_cap_fails_with_reason_and_event(
    cluster: Cluster, namespace: str, operator: Proc
) -> None:
    apply_task(cluster, namespace, "huge", {"type": "noop", "payload": {"blob": "x" * 70_000}})
    t = wait_phase(cluster, namespace, "huge", "Failed")
    c = cond(t, "Succeeded")
    assert (c["status"], c["reason"]) == ("False", "PayloadTooLarge")
    assert "over 65536" in c["message"]
    events = cluster.get_json(
        "events", "--field-selector", "involvedObject.name=huge", namespace=namespace
    )
    assert [e["reason"] for e in events["items"]] == ["PayloadTooLarge"]


def apply_enqueued(cluster: Cluster, namespace: str, name: str, spec: dict[str, Any]) -> None:
    """Apply a Task and wait until it reached the queue: one by one, the order Tasks reach the
    queue is the order they were created (kopf enqueues concurrently otherwise)."""
    apply_task(cluster, namespace, name, spec)
    wait_object(
        cluster,
        namespace,
        f"task/{name}",
        lambda t: t.get("status", {}).get("phase") not in (None, "Pending"),
        "to be enqueued",
    )


def test_a_concurrency_key_runs_its_tasks_one_at_a_time_in_order(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    for _ in range(2):  # 2 worker processes × 8 slots: plenty of room to overlap, if allowed
        workers(concurrency=8)
    slow = {"type": "slow", "payload": {"seconds": 0.2}}
    counts = {"customer-42": 10, "customer-7": 3}
    names = []
    for i in range(10):
        for key, n in counts.items():
            if i < n:
                name = f"{key}-{i}"
                apply_enqueued(cluster, namespace, name, {**slow, "concurrencyKey": key})
                names.append(name)
    for name in names:
        wait_phase(cluster, namespace, name, "Succeeded")
    r = redis.Redis.from_url(redis_url)
    spans = {}
    for name in names:
        uid = task(cluster, namespace, name)["metadata"]["uid"]
        started, finished = r.hmget(
            f"taskorch:{{{namespace}/default}}:t:{uid}", "started_ms", "finished_ms"
        )
        spans[name] = (int(started or 0), int(finished or 0))
    for key, n in counts.items():
        # in creation order, never two at once
        mine = [spans[f"{key}-{i}"] for i in range(n)]
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(mine)), f"{key} overlapped: {mine}"
    # the two keys ran beside each other: customer-7 did not wait for customer-42's ten
    assert spans["customer-7-2"][1] < spans["customer-42-9"][0], spans


def test_a_worker_killed_mid_task_never_leaves_its_concurrency_key_blocked(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    # short leases: the killed worker's task comes back within seconds
    procs = [workers(concurrency=8, TASKORCH_LEASE_SECONDS="3") for _ in range(2)]
    slow = {"type": "slow", "payload": {"seconds": 2}}
    names = [f"k-{i}" for i in range(3)]
    for name in names:
        apply_enqueued(cluster, namespace, name, {**slow, "concurrencyKey": "customer-9"})
    running = wait_phase(cluster, namespace, "k-0", "Running")
    r = redis.Redis.from_url(redis_url)
    key = f"taskorch:{{{namespace}/default}}:t:{running['metadata']['uid']}"
    owner = wait_for(lambda: r.hget(key, "owner"), timeout=10, what="k-0's worker").decode()
    [victim] = [p for p in procs if p.process and f"-{p.process.pid}-" in owner]
    victim.kill()  # SIGKILL mid-task: the lease expires, the task is recovered with its slot
    # another key, meanwhile: it runs at once on the surviving worker, not after the recovery
    quick = {"type": "slow", "payload": {"seconds": 0.3}}
    apply_task(cluster, namespace, "other-key", {**quick, "concurrencyKey": "customer-1"})
    for name in [*names, "other-key"]:
        wait_phase(cluster, namespace, name, "Succeeded", timeout=60)
    spans = []
    for name in names:
        uid = task(cluster, namespace, name)["metadata"]["uid"]
        raw = r.hget(f"taskorch:{{{namespace}/default}}:t:{uid}", "history")
        last = json.loads(raw)[-1]  # the attempt that succeeded
        spans.append((last["startTime"], last["finishTime"]))
    # after the recovery the key went on, in order and one at a time
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans
    assert task(cluster, namespace, "k-0")["status"]["attempts"] == 2  # rerun once, after the loss
    # the other key did not wait for the recovery
    other = task(cluster, namespace, "other-key")
    assert other["status"]["attempts"] == 1
    raw = r.hget(f"taskorch:{{{namespace}/default}}:t:{other['metadata']['uid']}", "history")
    assert json.loads(raw)[-1]["finishTime"] < spans[0][0], (raw, spans)
