"""CR-path benchmark: N Task CRs applied at once on the local control plane → all Succeeded."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.processes import start_operator, start_worker
from tests.support import TOOLS, env_with_tools, free_port

CLUSTER = "taskorch-bench"


def _kubectl(env: dict[str, str], *args: str, input: str | None = None) -> str:
    return subprocess.run(["kubectl", *args], env=env, input=input, capture_output=True, text=True, check=True).stdout


def _status_writes(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith('taskorch_operator_status_writes_total{kind="tasks"}'):
                return float(line.split()[-1])
    return 0.0


def run(redis_url: str, n: int, workdir: Path) -> dict[str, Any]:
    kubeconfig = workdir / "kubeconfig"
    subprocess.run([str(TOOLS / "cluster.sh"), "down", CLUSTER], capture_output=True)
    t_cluster = time.perf_counter()
    subprocess.run([str(TOOLS / "cluster.sh"), "up", CLUSTER, str(kubeconfig)], check=True, capture_output=True)
    cluster_start_s = time.perf_counter() - t_cluster
    env = env_with_tools(kubeconfig)
    procs = []
    try:
        _kubectl(env, "apply", "--server-side", "-f", str(Path(__file__).resolve().parent.parent / "crds"))
        _kubectl(env, "wait", "--for=condition=Established", "crd", "--all")
        _kubectl(env, "create", "namespace", "bench")
        metrics = free_port()
        procs.append(start_operator(redis_url, kubeconfig, workdir / "operator.log", "--metrics-port", str(metrics)))
        for i in range(2):
            procs.append(
                start_worker(redis_url, "bench", workdir / f"worker{i}.log", concurrency=16, app="taskorch_examples:app")
            )
        docs = [
            {"apiVersion": "taskorch.io/v1alpha1", "kind": "Task", "metadata": {"name": f"t{i}", "namespace": "bench"},
             "spec": {"type": "noop"}}
            for i in range(n)
        ]
        t0 = time.perf_counter()
        _kubectl(env, "apply", "-f", "-", input=yaml.safe_dump_all(docs))
        t_applied = time.perf_counter()
        done: dict[str, float] = {}
        deadline = t0 + 600
        while len(done) < n and time.perf_counter() < deadline:
            items = json.loads(_kubectl(env, "get", "tasks", "-n", "bench", "-o", "json"))["items"]
            now = time.perf_counter()
            for t in items:
                if t.get("status", {}).get("phase") == "Succeeded":
                    done.setdefault(t["metadata"]["name"], now - t0)
            time.sleep(0.25)
        t_end = max(done.values()) if done else float("nan")
        lat = sorted(done.values())
        q = statistics.quantiles(lat, n=100)
        writes = _status_writes(metrics)
        return {
            "tasks": n,
            "succeeded": len(done),
            "control_plane_start_s": round(cluster_start_s, 2),
            "apply_s": round(t_applied - t0, 2),
            "all_succeeded_s": round(t_end, 2),
            "tasks_per_s": round(n / t_end, 1),
            "create_to_succeeded_p50_s": round(q[49], 2),
            "create_to_succeeded_p99_s": round(q[98], 2),
            "status_writes_per_task": round(writes / n, 2),
            "note": "latencies are seen by polling kubectl every 0.25 s, so they carry ≤0.25 s of jitter",
        }
    finally:
        for p in procs:
            p.kill()
        subprocess.run([str(TOOLS / "cluster.sh"), "down", CLUSTER], capture_output=True)
