"""TaskQueue end to end: kubectl apply/patch → operator → the queue's Redis config → workers, on a
real API server, with worker processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskorch.queue.model import TaskInfo, TaskRef, TaskRequest
from tests.e2e.conftest import Cluster
from tests.e2e.processes import Proc, base_env, start_operator
from tests.e2e.test_tasks import apply_task, task, wait_phase
from tests.e2e.test_workflows import max_overlap
from tests.support import REPO, broker_call, wait_for


@pytest.fixture
def operator(cluster: Cluster, redis_url: str, tmp_path: Path) -> Iterator[Proc]:
    """The operator, refreshing TaskQueue status every second."""
    proc = start_operator(
        redis_url, cluster.kubeconfig, tmp_path / "operator.log", TASKORCH_QUEUE_STATUS_SECONDS="1"
    )
    yield proc
    proc.kill()


def apply_queue(cluster: Cluster, namespace: str, name: str, spec: dict[str, Any]) -> None:
    doc = {
        "apiVersion": "taskorch.io/v1alpha1",
        "kind": "TaskQueue",
        "metadata": {"name": name},
        "spec": spec,
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), namespace=namespace)


def queue_config(redis_url: str, namespace: str, queue: str) -> dict[str, str]:
    return dict(broker_call(redis_url, lambda b: b.config(namespace, queue)))


def finished(redis_url: str, namespace: str, queue: str, ids: list[str]) -> list[TaskInfo] | None:
    refs = [TaskRef(namespace, queue, i) for i in ids]
    infos = broker_call(redis_url, lambda b: b.get_many(refs))
    done = [i for i in infos if i is not None and i.finished_ms]
    return done if len(done) == len(ids) else None


def test_pause_by_kubectl_patch_stops_claims_and_resume_restarts_them(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    apply_queue(cluster, namespace, "emails", {"maxConcurrent": 20})
    workers(args=("--queues", "emails"))
    apply_task(cluster, namespace, "before", {"type": "count", "queue": "emails"})
    wait_phase(cluster, namespace, "before", "Succeeded")

    patch = '{"spec":{"paused":true}}'
    cluster.kubectl(
        "patch", "taskqueue", "emails", "--type", "merge", "-p", patch, namespace=namespace
    )
    started = time.monotonic()
    wait_for(
        lambda: queue_config(redis_url, namespace, "emails").get("paused") == "1",
        timeout=10,
        interval=0.05,
        what="the pause to reach Redis",
    )
    print(f"pause reached Redis {time.monotonic() - started:.2f} s after kubectl patch")
    apply_task(cluster, namespace, "during", {"type": "count", "queue": "emails"})
    wait_phase(cluster, namespace, "during", "Queued")
    # kubectl get taskqueues shows it paused, with the task waiting
    wait_for(
        lambda: (task_queue(cluster, namespace, "emails").get("status") or {}).get("ready") == 1,
        timeout=15,
        what="the TaskQueue status to count the waiting task",
    )
    table = cluster.kubectl("get", "taskqueues", namespace=namespace).stdout
    assert table.split("\n")[0].split() == [
        "NAME",
        "READY",
        "ACTIVE",
        "DELAYED",
        "DEAD",
        "OLDEST",
        "PAUSED",
        "RATE",
        "AGE",
    ], table
    row = table.split("\n")[1].split()
    assert row[0] == "emails" and row[1] == "1" and row[6] == "true", table
    # a worker with free capacity leaves it alone while paused (an observation window, not a sync)
    time.sleep(1.5)
    assert task(cluster, namespace, "during")["status"]["phase"] == "Queued"

    # the CLI resumes it through the TaskQueue (the source of truth), not behind its back
    out = subprocess.run(
        [str(Path(sys.executable).parent / "taskorch"), "resume", "-n", namespace, "emails"],
        capture_output=True,
        text=True,
        env=base_env(redis_url, cluster.kubeconfig),
        cwd=REPO,
        check=True,
    ).stdout
    assert "TaskQueue spec.paused=false" in out, out
    assert task_queue(cluster, namespace, "emails")["spec"]["paused"] is False
    wait_phase(cluster, namespace, "during", "Succeeded")


def task_queue(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(cluster.get_json(f"taskqueue/{name}", namespace=namespace))


def test_max_concurrent_holds_across_two_worker_processes(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    apply_queue(cluster, namespace, "pdf", {"maxConcurrent": 3})
    wait_for(
        lambda: queue_config(redis_url, namespace, "pdf").get("max_concurrent") == "3",
        timeout=15,
        what="the policy in Redis",
    )
    # 2 + 2 slots in the workers: the queue's cap of 3 is what binds, and both take part
    for _ in range(2):
        workers(concurrency=2, args=("--queues", "pdf"))
    requests = [TaskRequest("slow", payload={"seconds": 0.3}) for _ in range(15)]
    ids = broker_call(redis_url, lambda b: b.enqueue_many(namespace, "pdf", requests))
    done = wait_for(lambda: finished(redis_url, namespace, "pdf", ids), timeout=60, what="15 tasks")
    spans = [(i.history[-1]["startTime"], i.history[-1]["finishTime"]) for i in done]
    assert max_overlap(spans) == 3, spans
    assert len({i.history[-1]["worker"] for i in done}) == 2  # both processes took part


def test_rate_limit_holds_20_a_second_over_10_seconds(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    apply_queue(cluster, namespace, "api", {"rateLimit": {"tasks": 20, "per": "1s"}})
    wait_for(
        lambda: queue_config(redis_url, namespace, "api").get("rate_tasks") == "20",
        timeout=15,
        what="the policy in Redis",
    )
    for _ in range(2):
        workers(concurrency=16, args=("--queues", "api"))
    requests = [TaskRequest("count") for _ in range(250)]
    ids = broker_call(redis_url, lambda b: b.enqueue_many(namespace, "api", requests))
    done = wait_for(
        lambda: finished(redis_url, namespace, "api", ids), timeout=40, what="250 tasks"
    )
    starts = sorted(i.started_ms for i in done if i.started_ms)
    window = starts[0] + 1000  # past the one period's worth a full bucket allows at once
    in_window = [s for s in starts if window <= s < window + 10_000]
    print(f"rate limit 20/s: {len(in_window)} starts in 10 s")
    assert 180 <= len(in_window) <= 220, len(in_window)


def test_default_retry_and_status_counts(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc]
) -> None:
    apply_queue(
        cluster,
        namespace,
        "default",
        {"defaultRetry": {"maxAttempts": 2, "initialDelay": "0s", "jitter": False}},
    )
    workers()
    wait_for(
        lambda: any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (task_queue(cluster, namespace, "default").get("status") or {}).get(
                "conditions", []
            )
        ),
        timeout=15,
        what="the TaskQueue to be Ready",
    )
    apply_task(cluster, namespace, "fails", {"type": "always_fail"})
    body = wait_phase(cluster, namespace, "fails", "DeadLettered")
    assert body["status"]["attempts"] == 2  # the queue's default, not the built-in 3
    wait_for(
        lambda: (task_queue(cluster, namespace, "default").get("status") or {}).get("dead") == 1,
        timeout=15,
        what="the TaskQueue status to count the dead task",
    )


def test_bad_policy_is_refused_at_apply_naming_the_field(cluster: Cluster, namespace: str) -> None:
    for spec, field in (
        ({"rateLimit": {"tasks": 10, "per": "0s"}}, "spec.rateLimit.per"),
        ({"rateLimit": {"tasks": 0}}, "spec.rateLimit.tasks"),
        ({"maxConcurrent": 0}, "spec.maxConcurrent"),
        ({"resultRetention": "forever"}, "spec.resultRetention"),
    ):
        doc = {
            "apiVersion": "taskorch.io/v1alpha1",
            "kind": "TaskQueue",
            "metadata": {"name": "bad"},
            "spec": spec,
        }
        out = cluster.kubectl(
            "apply", "-f", "-", input=yaml.safe_dump(doc), namespace=namespace, check=False
        )
        assert out.returncode != 0 and field in out.stderr, (spec, out.stderr)


def test_deleting_the_taskqueue_restores_the_defaults(
    cluster: Cluster, namespace: str, operator: Proc, redis_url: str
) -> None:
    apply_queue(cluster, namespace, "media", {"paused": True})
    wait_for(
        lambda: queue_config(redis_url, namespace, "media").get("paused") == "1",
        timeout=15,
        what="the pause in Redis",
    )
    cluster.kubectl("delete", "taskqueue", "media", namespace=namespace)
    wait_for(
        lambda: queue_config(redis_url, namespace, "media") == {},
        timeout=15,
        what="the queue's policy to be dropped",
    )
