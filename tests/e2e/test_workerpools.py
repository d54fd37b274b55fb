"""WorkerPool end to end on the real control plane: the operator scales a worker Deployment by
queue depth. kwok makes the pods Running; `PodWorkers` stands in for the kubelet, running one
worker process per live pod (POD_NAME = the pod) and sending it SIGTERM when the pod is gone."""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskorch.queue.model import State, TaskInfo, TaskRef, TaskRequest
from taskorch.queue.workers import read_workers
from tests.e2e.conftest import Cluster
from tests.e2e.processes import Proc, start_operator, start_worker
from tests.support import RedisServer, broker_call, free_port, wait_for

DEPLOYMENT = "workers"


class PodWorkers:
    """The kubelet's part: a worker process per live pod of the Deployment."""

    def __init__(self, cluster: Cluster, namespace: str, redis_url: str, logs: Path) -> None:
        self.cluster, self.namespace, self.redis_url, self.logs = (
            cluster,
            namespace,
            redis_url,
            logs,
        )
        self.concurrency = 4
        self.procs: dict[str, Proc] = {}
        self.removed: list[str] = []  # pods whose worker was stopped, in order
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def pods(self) -> list[str]:
        got = self.cluster.get_json("pods", "-l", f"app={DEPLOYMENT}", namespace=self.namespace)
        return sorted(
            p["metadata"]["name"]
            for p in got["items"]
            if not p["metadata"].get("deletionTimestamp")
        )

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            live = set(self.pods())
            for pod in live - set(self.procs):
                self.procs[pod] = start_worker(
                    self.redis_url,
                    self.namespace,
                    self.logs / f"{pod}.log",
                    concurrency=self.concurrency,
                    POD_NAME=pod,
                )
            for pod in set(self.procs) - live:
                self.procs.pop(pod).stop(timeout=30)  # SIGTERM: drain, as the kubelet does
                self.removed.append(pod)
            time.sleep(0.3)

    def __enter__(self) -> PodWorkers:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop_event.set()
        self.thread.join(timeout=60)
        for proc in self.procs.values():
            proc.kill()


def apply(cluster: Cluster, namespace: str, *docs: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), namespace=namespace)


def deployment(replicas: int) -> dict[str, Any]:
    labels = {"app": DEPLOYMENT}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "worker", "image": "taskorch-worker:dev"}]},
            },
        },
    }


def pool(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "taskorch.io/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": "pool"},
        "spec": {
            "scaleTargetRef": {"name": DEPLOYMENT},
            "queues": ["default"],
            "concurrency": 4,
            "minReplicas": 0,
            "maxReplicas": 6,
            "pollInterval": "1s",
            "cooldownSeconds": 6,
            "scaleDown": {"stabilizationWindowSeconds": 3, "maxStepPercent": 25},
            **spec,
        },
    }


def replicas(cluster: Cluster, namespace: str) -> int:
    return int(
        cluster.get_json(f"deployment/{DEPLOYMENT}", namespace=namespace)["spec"]["replicas"]
    )


def pool_status(cluster: Cluster, namespace: str) -> dict[str, Any]:
    return dict(cluster.get_json("workerpool/pool", namespace=namespace).get("status") or {})


def condition(cluster: Cluster, namespace: str, type_: str) -> dict[str, Any] | None:
    conds = pool_status(cluster, namespace).get("conditions") or []
    return next((c for c in conds if c["type"] == type_), None)


def enqueue(redis_url: str, namespace: str, n: int, seconds: float) -> list[str]:
    reqs = [TaskRequest("slow", payload={"seconds": seconds}) for _ in range(n)]
    return list(broker_call(redis_url, lambda b: b.enqueue_many(namespace, "default", reqs)))


def tasks(redis_url: str, namespace: str, ids: list[str]) -> list[TaskInfo | None]:
    refs = [TaskRef(namespace, "default", i) for i in ids]
    return list(broker_call(redis_url, lambda b: b.get_many(refs)))


def all_succeeded_once(redis_url: str, namespace: str, ids: list[str]) -> bool:
    infos = tasks(redis_url, namespace, ids)
    return all(i is not None and i.state is State.succeeded for i in infos)


class ReplicaRecorder:
    """The Deployment's replica count over time (every 0.2 s), to check the scaler's steps."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.series: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            self._sample()
            time.sleep(0.2)

    def _sample(self) -> None:
        r = replicas(self.cluster, self.namespace)
        if not self.series or self.series[-1] != r:
            self.series.append(r)

    def __enter__(self) -> ReplicaRecorder:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self._sample()  # the value the test waited for


@pytest.fixture
def pod_workers(
    cluster: Cluster, namespace: str, redis_url: str, tmp_path: Path
) -> Iterator[PodWorkers]:
    with PodWorkers(cluster, namespace, redis_url, tmp_path) as pw:
        yield pw


def test_a_burst_wakes_the_pool_from_zero_it_grows_then_shrinks_in_steps_to_zero(
    cluster: Cluster, namespace: str, operator: Proc, redis_url: str, pod_workers: PodWorkers
) -> None:
    apply(cluster, namespace, deployment(0), pool())
    wait_for(lambda: condition(cluster, namespace, "MetricsAvailable"), timeout=30, what="a poll")
    with ReplicaRecorder(cluster, namespace) as rec:
        sent = time.monotonic()
        ids = enqueue(redis_url, namespace, 200, 0.3)
        wait_for(lambda: replicas(cluster, namespace) >= 1, timeout=10, what="activation from 0")
        print(f"burst → first scale-up {time.monotonic() - sent:.2f} s (poll interval 1 s)")
        wait_for(lambda: replicas(cluster, namespace) == 6, timeout=30, what="max replicas")
        wait_for(
            lambda: all_succeeded_once(redis_url, namespace, ids), timeout=120, what="the burst"
        )
        done = time.monotonic()
        wait_for(lambda: replicas(cluster, namespace) == 0, timeout=60, what="scale to zero")
        print(f"drained → 0 replicas {time.monotonic() - done:.2f} s (cooldown 6 s)")
    series = rec.series
    top = series.index(6)
    assert series[:top] == sorted(series[:top]), series  # up only while the burst grows
    down = series[top:]
    for a, b in itertools.pairwise(down):
        assert 0 < a - b <= max(1, math.ceil(a * 0.25)), series  # bounded steps down
    assert down[-1] == 0
    # nothing ran twice or was lost because workers came and went
    assert all(i is not None and i.attempt == 1 for i in tasks(redis_url, namespace, ids))
    table = cluster.kubectl("get", "workerpools", namespace=namespace).stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "DEPLOYMENT",
        "REPLICAS",
        "DESIRED",
        "BACKLOG",
        "IN-FLIGHT",
        "BUSY",
        "AGE",
    ], table


def test_scale_down_removes_only_idle_workers_and_no_task_is_rerun(
    cluster: Cluster, namespace: str, operator: Proc, redis_url: str, pod_workers: PodWorkers
) -> None:
    pod_workers.concurrency = 1  # one task a worker: two tasks make two busy workers
    apply(cluster, namespace, deployment(4))

    def workers_up() -> bool:
        got = broker_call(redis_url, lambda b: read_workers(b.redis, namespace))
        return len(got) == 4

    wait_for(workers_up, timeout=60, what="4 workers heartbeating")
    # two long tasks: two busy workers, two idle ones, no backlog → the pool shrinks to 2
    ids = enqueue(redis_url, namespace, 2, 12)

    def busy_pods() -> set[str] | None:
        got = broker_call(redis_url, lambda b: read_workers(b.redis, namespace))
        pods = {w.pod for w in got if w.running}
        return pods if len(pods) == 2 else None

    busy = wait_for(busy_pods, timeout=30, what="two busy workers")
    apply(cluster, namespace, pool(maxReplicas=4, minReplicas=1, concurrency=1))
    wait_for(lambda: replicas(cluster, namespace) == 2, timeout=40, what="shrink to the busy two")
    wait_for(lambda: len(pod_workers.pods()) == 2, timeout=30, what="the idle pods to go")
    assert set(pod_workers.pods()) == busy, (pod_workers.pods(), busy)
    assert not busy & set(pod_workers.removed)
    wait_for(lambda: all_succeeded_once(redis_url, namespace, ids), timeout=60, what="the tasks")
    infos = tasks(redis_url, namespace, ids)
    assert all(i is not None and i.attempt == 1 for i in infos), infos


def test_redis_down_holds_replicas_and_says_so(
    cluster: Cluster,
    namespace: str,
    operator: Proc,
    redis_url: str,
    redis_server: RedisServer,
    pod_workers: PodWorkers,
) -> None:
    apply(cluster, namespace, deployment(0), pool())
    enqueue(redis_url, namespace, 8, 30)  # 8 long tasks over 4 slots a worker: 2 replicas
    wait_for(lambda: replicas(cluster, namespace) == 2, timeout=30, what="2 replicas")
    redis_server.stop()
    try:

        def unavailable() -> dict[str, Any] | None:
            c = condition(cluster, namespace, "MetricsAvailable")
            return c if c and c["status"] == "False" else None

        c = wait_for(unavailable, timeout=30, what="MetricsAvailable=False")
        assert c["reason"] == "RedisUnreachable"
        # a few polls without metrics (an observation window, not a synchronisation): held
        time.sleep(3)
        assert replicas(cluster, namespace) == 2
    finally:
        redis_server.start()

    def available() -> bool:
        c = condition(cluster, namespace, "MetricsAvailable")
        return bool(c and c["status"] == "True")

    wait_for(available, timeout=30, what="MetricsAvailable=True again")
    assert replicas(cluster, namespace) == 2


def test_an_external_owner_of_scale_makes_the_scaler_stand_aside(
    cluster: Cluster, namespace: str, operator: Proc, pod_workers: PodWorkers
) -> None:
    apply(cluster, namespace, deployment(0), pool())
    wait_for(lambda: condition(cluster, namespace, "ScalingActive"), timeout=30, what="a poll")
    # what an HPA does: write the WorkerPool's /scale subresource
    cluster.kubectl("scale", "workerpool/pool", "--replicas=3", namespace=namespace)
    wait_for(lambda: replicas(cluster, namespace) == 3, timeout=30, what="the owner's count")

    def standing_aside() -> dict[str, Any] | None:
        c = condition(cluster, namespace, "ScalingActive")
        return c if c and c["reason"] == "ExternalOwner" else None

    c = wait_for(standing_aside, timeout=30, what="ScalingActive=False ExternalOwner")
    assert c["status"] == "False"
    assert pool_status(cluster, namespace)["selector"] == f"app={DEPLOYMENT}"


def test_bad_input_is_refused_or_reported(cluster: Cluster, namespace: str, operator: Proc) -> None:
    for spec, field in (
        ({"minReplicas": 5, "maxReplicas": 2}, "spec.minReplicas"),
        ({"concurrency": -1}, "spec.concurrency"),
        ({"queues": []}, "spec.queues"),
    ):
        out = cluster.kubectl(
            "apply", "-f", "-", input=yaml.safe_dump(pool(**spec)), namespace=namespace, check=False
        )
        assert out.returncode != 0 and field in out.stderr, (spec, out.stderr)
    apply(cluster, namespace, pool(scaleTargetRef={"name": "missing"}))

    def not_found() -> dict[str, Any] | None:
        c = condition(cluster, namespace, "ScalingActive")
        return c if c and c["reason"] == "DeploymentNotFound" else None

    c = wait_for(not_found, timeout=30, what="DeploymentNotFound")
    assert c["status"] == "False" and "missing" in c["message"]


def test_the_operator_serves_pool_numbers_for_keda_and_prometheus(
    cluster: Cluster, namespace: str, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    operator = start_operator(
        redis_url, cluster.kubeconfig, tmp_path / "operator.log", "--metrics-port", str(port)
    )
    try:
        apply(cluster, namespace, deployment(0), pool(minReplicas=1, maxReplicas=3))
        enqueue(redis_url, namespace, 5, 30)

        def numbers() -> dict[str, Any] | None:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/scaler/{namespace}/pool", timeout=2
                ) as r:
                    got: dict[str, Any] = json.loads(r.read())
                    return got if got["backlog"] + got["inFlight"] >= 5 else None
            except urllib.error.HTTPError:
                return None  # 503 until the first measurement

        got = wait_for(numbers, timeout=30, what="the pool's numbers as JSON")
        assert set(got) == {
            "backlog",
            "inFlight",
            "busy",
            "workers",
            "replicas",
            "desired",
            "recommended",
        }
        assert got["recommended"] == 2  # ceil(5 / 4)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
        assert f'taskorch_pool_desired_replicas{{namespace="{namespace}",pool="pool"}}' in text
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/scaler/{namespace}/nope", timeout=2)
        assert missing.value.code == 404
    finally:
        operator.kill()
