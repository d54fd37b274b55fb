"""CR-path benchmark on the local control plane: N Task CRs created by 8 client threads → all
Succeeded, as a ratio to N bare creates (the same objects, the same 8 threads, no operator), which
is what this API server can take: a Task costs its create and its status write, so ~0.5× is the
ceiling."""

from __future__ import annotations

import statistics
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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


CLIENT_THREADS = 8


def _task(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "taskorch.io/v1alpha1",
        "kind": "Task",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": "noop"},
    }


def _create_all(custom: k8s.CustomObjectsApi, namespace: str, n: int) -> float:
    """Create n Tasks with CLIENT_THREADS threads; the seconds it took."""

    def create(i: int) -> None:
        custom.create_namespaced_custom_object(
            "taskorch.io", "v1alpha1", namespace, "tasks", _task(f"t{i}", namespace)
        )

    t0 = time.perf_counter()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(create, range(n)))
    return time.perf_counter() - t0


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
        _kubectl(env, "create", "namespace", "bare")
        _kubectl(env, "create", "namespace", "warm-up")
        api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
        api.configuration.connection_pool_maxsize = CLIENT_THREADS
        custom = k8s.CustomObjectsApi(api)
        _create_all(custom, "warm-up", n)  # a cold API server (and client) would flatter the ratio
        bare_s = _create_all(custom, "bare", n)  # no operator runs yet, nor ever watches "bare"
        metrics = free_port()
        procs.append(
            start_operator(
                redis_url,
                kubeconfig,
                workdir / "operator.log",
                "--metrics-port",
                str(metrics),
                "--namespace",
                "bench",
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
        # A poller lists the Tasks every 0.1 s from before the creates, so each task's latency
        # is first-seen → first-seen-Succeeded.
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
        create_s = _create_all(custom, "bench", n)
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
            "client_threads": CLIENT_THREADS,
            "bare_creates_per_s": round(n / bare_s, 1),
            "create_s": round(create_s, 2),
            "all_succeeded_s": round(t_end, 2),
            "tasks_per_s": round(n / t_end, 1),
            "vs_bare_creates": round((n / t_end) / (n / bare_s), 2),
            "create_to_succeeded_p50_s": round(q[49], 2),
            "create_to_succeeded_p99_s": round(q[98], 2),
            "status_writes_per_task": round(writes / n, 2),
            "note": "latency: first seen by a 0.1 s list poll → first seen Succeeded (±0.1 s); "
            "all_succeeded_s runs from the first create to the last Succeeded",
        }
    finally:
        for p in procs:
            p.kill()
        subprocess.run([str(TOOLS / "cluster.sh"), "down", CLUSTER], capture_output=True)
