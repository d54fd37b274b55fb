"""WorkerPool benchmark (issue: WorkerPool), on the local control plane with a worker process per
kwok pod (the e2e tests' kubelet stand-in):

- reaction: a burst on a pool at 0 → the first scale-up (the poll interval bounds it; KEDA's
  answer is its 30 s poll plus the HPA's 15 s sync), and burst drained → back at 0;
- soak: waves of tasks of mixed length, so the pool scales up and down again and again; counts
  scale-downs, pods removed while their worker ran a task (target 0: a worker logs how many
  attempts were in flight when SIGTERM came), and tasks run more than once (target 0).
"""

from __future__ import annotations

import random
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from taskorch.queue.model import TaskRef, TaskRequest
from tests.e2e.conftest import Cluster
from tests.e2e.processes import start_operator
from tests.e2e.test_workerpools import PodWorkers, ReplicaRecorder, deployment, pool, replicas
from tests.support import TOOLS, broker_call, env_with_tools, wait_for

CLUSTER = "taskorch-bench-pool"
NS = "bench"


def _enqueue(url: str, seconds: list[float]) -> list[str]:
    reqs = [TaskRequest("slow", payload={"seconds": s}) for s in seconds]
    return list(broker_call(url, lambda b: b.enqueue_many(NS, "default", reqs)))


def _all_done(url: str, ids: list[str]) -> list[Any] | None:
    infos = broker_call(url, lambda b: b.get_many([TaskRef(NS, "default", i) for i in ids]))
    return infos if all(i is not None and i.finished_ms for i in infos) else None


def run(redis_url: str, workdir: Path, waves: int = 8) -> dict[str, Any]:
    kubeconfig = workdir / "kubeconfig-pool"
    subprocess.run([str(TOOLS / "cluster.sh"), "down", CLUSTER], capture_output=True)
    subprocess.run(
        [str(TOOLS / "cluster.sh"), "up", CLUSTER, str(kubeconfig)], check=True, capture_output=True
    )
    cluster = Cluster(kubeconfig, env_with_tools(kubeconfig))
    logs = workdir / "pool-workers"
    logs.mkdir(exist_ok=True)
    operator = None
    try:
        cluster.kubectl(
            "apply", "--server-side", "-f", str(Path(__file__).resolve().parent.parent / "crds")
        )
        cluster.kubectl("wait", "--for=condition=Established", "crd", "--all")
        cluster.kubectl("create", "namespace", NS)
        operator = start_operator(redis_url, kubeconfig, workdir / "operator-pool.log")
        spec = pool(maxReplicas=6, concurrency=4, cooldownSeconds=5)
        spec["spec"]["scaleDown"] = {"stabilizationWindowSeconds": 2, "maxStepPercent": 50}
        cluster.kubectl(
            "apply", "-f", "-", input=yaml.safe_dump_all([deployment(0), spec]), namespace=NS
        )
        with PodWorkers(cluster, NS, redis_url, logs) as pods, ReplicaRecorder(cluster, NS) as rec:
            time.sleep(2)  # the pool's first poll
            # reaction
            t0 = time.monotonic()
            ids = _enqueue(redis_url, [0.2] * 200)
            wait_for(lambda: replicas(cluster, NS) >= 1, timeout=30, interval=0.02, what="scale-up")
            first_scale_s = time.monotonic() - t0
            wait_for(lambda: _all_done(redis_url, ids), timeout=120, what="the burst")
            t_done = time.monotonic()
            wait_for(lambda: replicas(cluster, NS) == 0, timeout=120, what="back to 0")
            to_zero_s = time.monotonic() - t_done
            # soak: waves with pauses long enough for the pool to shrink in between
            rng = random.Random(11)
            all_ids = list(ids)
            for _ in range(waves):
                wave = [rng.uniform(0.2, 3.0) for _ in range(rng.randint(10, 60))]
                all_ids += _enqueue(redis_url, wave)
                time.sleep(rng.uniform(4, 9))
            infos = wait_for(lambda: _all_done(redis_url, all_ids), timeout=300, what="every wave")
            wait_for(
                lambda: replicas(cluster, NS) == 0, timeout=120, what="back to 0 after the soak"
            )
            series = rec.series
            removed = list(pods.removed)
    finally:
        if operator:
            operator.kill()
        subprocess.run([str(TOOLS / "cluster.sh"), "down", CLUSTER], capture_output=True)
    busy_removed = 0
    for log in logs.glob("*.log"):
        for m in re.finditer(
            r"draining: (\d+) attempts in flight", log.read_text(errors="replace")
        ):
            busy_removed += int(m.group(1)) > 0
    scale_downs = sum(1 for a, b in zip(series, series[1:], strict=False) if b < a)
    return {
        "burst_to_first_scale_up_s": round(first_scale_s, 2),
        "poll_interval_s": 1,
        "drained_to_zero_s": round(to_zero_s, 2),
        "cooldown_s": 5,
        "soak_tasks": len(all_ids),
        "soak_scale_downs": scale_downs,
        "pods_removed": len(removed),
        "busy_pods_removed": busy_removed,
        "tasks_run_more_than_once": sum(1 for i in infos if i.attempt > 1),
        "replica_series": series,
    }
