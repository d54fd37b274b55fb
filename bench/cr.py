"""CR-path benchmark: N Task CRs applied at once on the local control plane → all Succeeded."""

from __future__ import annotations

import json
import statistics
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.e2e.processes import start_operator, start_worker
from tests.support import TOOLS, env_with_tools, free_port

CLUSTER = "taskorch-bench"


def _kubectl(env: dict[str, str], *args: str, input: str | None = None) -> str:
    return subprocess.run(
        ["kubectl", *args], env=env, input=input, capture_output=True, text=True, check=True
    ).stdout


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
    subprocess.run(
        [str(TOOLS / "cluster.sh"), "up", CLUSTER, str(kubeconfig)], check=True, capture_output=True
    )
    cluster_start_s = time.perf_counter() - t_cluster
    env = env_with_tools(kubeconfig)
    procs = []
    try:
        _kubectl(
            env,
            "apply",
            "--server-side",
            "-f",
            str(Path(__file__).resolve().parent.parent / "crds"),
        )
        _kubectl(env, "wait", "--for=condition=Established", "crd", "--all")
        _kubectl(env, "create", "namespace", "bench")
        metrics = free_port()
        procs.append(
            start_operator(
                redis_url, kubeconfig, workdir / "operator.log", "--metrics-port", str(metrics)
            )
        )
        for i in range(2):
            procs.append(
                start_worker(
                    redis_url,
                    "bench",
                    workdir / f"worker{i}.log",
                    concurrency=16,
                    app="taskorch_examples:app",
                )
            )
        docs = [
            {
                "apiVersion": "taskorch.io/v1alpha1",
                "kind": "Task",
                "metadata": {"name": f"t{i}", "namespace": "bench"},
                "spec": {"type": "noop"},
            }
            for i in range(n)
        ]
        # A poller lists the Tasks every 0.1 s from before the apply, so each task's latency is
        # first-seen → first-seen-Succeeded, not skewed by kubectl applying 500 objects serially.
        custom = k8s.CustomObjectsApi(
            k8s_config.new_client_from_config(config_file=str(kubeconfig))
        )
        seen: dict[str, float] = {}
        done: dict[str, float] = {}
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set() and len(done) < n:
                items = custom.list_namespaced_custom_object(
                    "taskorch.io", "v1alpha1", "bench", "tasks"
                )["items"]
                now = time.perf_counter()
                for t in items:
                    name = t["metadata"]["name"]
                    seen.setdefault(name, now)
                    if t.get("status", {}).get("phase") == "Succeeded":
                        done.setdefault(name, now)
                stop.wait(0.1)

        poller = threading.Thread(target=poll, daemon=True)
        t0 = time.perf_counter()
        poller.start()
        _kubectl(env, "apply", "-f", "-", input=yaml.safe_dump_all(docs))
        t_applied = time.perf_counter()
        poller.join(timeout=600)
        stop.set()
        t_end = max(done.values()) - t0 if done else float("nan")
        lat = sorted(done[name] - seen[name] for name in done)
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
            "note": "latency: first seen by a 0.1 s list poll → first seen Succeeded (±0.1 s); "
            "all_succeeded_s includes kubectl applying the 500 objects one by one (apply_s)",
        }
    finally:
        for p in procs:
            p.kill()
        subprocess.run([str(TOOLS / "cluster.sh"), "down", CLUSTER], capture_output=True)
