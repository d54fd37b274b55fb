"""CR-path benchmark on the local control plane: N Task CRs created by 8 client threads → all
Succeeded, as a ratio to N bare creates (the same objects, the same 8 threads, no operator), which
is what this API server can take: a Task costs its create and its status write, so ~0.5× is the
ceiling. Then the Kubernetes-native peer on the same control plane: N batch/v1 Jobs (one trivial
container, backoffLimit 0) created by the same 8 threads → all Complete.

kwok fakes the kubelets: kwok's "fast" pod stages (tests/tools/kwok-stages.yaml) mark a Job's
pod Running and then Succeeded at once, with no image pull, container start or run time. That
flatters the Jobs: on a real cluster each pod costs seconds of start-up; here a Job costs only
its API objects and the job controller's work."""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from tests.e2e.processes import Proc, start_operator, start_worker
from tests.support import TOOLS, env_with_tools, free_port

from bench.drain import _tree_cpu_seconds

# Overridable so that two people's benches on one machine use two control planes.
CLUSTER = os.environ.get("TASKORCH_BENCH_CLUSTER", "taskorch-bench")
CLIENT_THREADS = 8
# kube-controller-manager and kube-scheduler with their client rate limits lifted (kwokctl's
# --extra-args; a fourth item crashes kwokctl 0.8, and the scheduler's default burst is 100).
LIFTED = (
    "kube-controller-manager=kube-api-qps=5000 kube-controller-manager=kube-api-burst=5000 "
    "kube-scheduler=kube-api-qps=5000"
)
# Called with the operator's process once it is up (a profiler attaches there); None: nothing.
ON_OPERATOR: Callable[[Proc], None] | None = None


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


def _control_plane_cpu() -> dict[str, float]:
    """CPU seconds of each control-plane process (etcd, kube-apiserver, kube-controller-manager,
    kube-scheduler, kwok-controller), from the pid files kwokctl keeps."""
    workdir = os.environ.get("KWOK_WORKDIR") or str(Path.home() / ".cache/taskorch/kwok")
    cpu: dict[str, float] = {}
    for f in (Path(workdir) / "clusters" / CLUSTER / "pids").glob("*.pid"):
        try:
            cpu[f.stem] = _tree_cpu_seconds(int(f.read_text().strip()))
        except (OSError, ValueError):
            continue
    return cpu


def _per_object_us(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, int]:
    """CPU µs per object of each control-plane process between two readings, and their total."""
    each = {k: round((after[k] - before.get(k, 0.0)) / n * 1e6) for k in sorted(after)}
    return {"total": sum(each.values()), **each}


def _task(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "taskorch.io/v1alpha1",
        "kind": "Task",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": "noop"},
    }


def _job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "noop", "image": "busybox", "command": ["true"]}],
                }
            },
        },
    }


def _create_all(create: Callable[[int], object], n: int) -> float:
    """Call create(0..n-1) from CLIENT_THREADS threads; the seconds it took."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(create, range(n)))
    return time.perf_counter() - t0


def _create_tasks(custom: k8s.CustomObjectsApi, namespace: str, n: int) -> float:
    def create(i: int) -> None:
        custom.create_namespaced_custom_object(
            "taskorch.io", "v1alpha1", namespace, "tasks", _task(f"t{i}", namespace)
        )

    return _create_all(create, n)


class Follower:
    """Watches the objects from before the creates, in a thread: each object's latency runs from
    its ADDED event to the first event that shows it done. One watch, as a controller would
    have: a list of N objects every 0.1 s (this bench's first method) cost the API server more
    than the objects themselves, and weighed on the Tasks' figure but not on the bare creates'.
    Events are parsed from the raw stream: the client's model building would cost this process
    (whose threads make the creates) more for Jobs than for Tasks."""

    def __init__(
        self, n: int, call: Callable[..., Any], is_done: Callable[[dict[str, Any]], bool]
    ) -> None:
        self.n, self.call, self.is_done = n, call, is_done
        self.seen: dict[str, float] = {}
        self.done: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        listed = json.loads(self.call(_preload_content=False).data)
        version = str(listed["metadata"]["resourceVersion"])
        self.thread = threading.Thread(target=self._watch, args=(version,), daemon=True)
        self.thread.start()

    def _watch(self, version: str) -> None:
        while not self.stop.is_set() and len(self.done) < self.n:
            response = self.call(
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=60,
                _preload_content=False,
            )
            rest = b""
            for chunk in response.stream(amt=None, decode_content=False):
                *lines, rest = (rest + chunk).split(b"\n")
                now = time.perf_counter()
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        raise RuntimeError(f"watch: {obj}")
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] == "BOOKMARK":
                        continue
                    name = obj["metadata"]["name"]
                    self.seen.setdefault(name, now)
                    if self.is_done(obj):
                        self.done.setdefault(name, now)
                if self.stop.is_set() or len(self.done) >= self.n:
                    break
            response.close()
            response.release_conn()

    def join(self, timeout: float) -> None:
        assert self.thread is not None
        self.thread.join(timeout=timeout)
        self.stop.set()

    def figures(self, t0: float, what: str) -> dict[str, Any]:
        n = self.n
        t_end = max(self.done.values()) - t0 if self.done else float("nan")
        lat = sorted(self.done[name] - self.seen[name] for name in self.done)
        q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [float("nan")] * 99
        return {
            "done": len(self.done),
            f"all_{what}_s": round(t_end, 2),
            "seconds": t_end,
            "per_s": round(n / t_end, 1),
            f"create_to_{what}_p50_s": round(q[49], 2),
            f"create_to_{what}_p99_s": round(q[98], 2),
        }


def _task_succeeded(t: dict[str, Any]) -> bool:
    return bool((t.get("status") or {}).get("phase") == "Succeeded")


def _job_complete(j: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Complete" and c.get("status") == "True"
        for c in (j.get("status") or {}).get("conditions") or []
    )


def _up(kubeconfig: Path, extra_args: str = "") -> float:
    """(Re)create the bench's control plane; the seconds it took."""
    subprocess.run([str(TOOLS / "cluster.sh"), "down", CLUSTER], capture_output=True)
    env = {**os.environ, "TASKORCH_KWOK_EXTRA_ARGS": extra_args}
    t0 = time.perf_counter()
    subprocess.run(
        [str(TOOLS / "cluster.sh"), "up", CLUSTER, str(kubeconfig)],
        check=True,
        capture_output=True,
        env=env,
    )
    return time.perf_counter() - t0


def _client(kubeconfig: Path) -> k8s.ApiClient:
    api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
    api.configuration.connection_pool_maxsize = CLIENT_THREADS + 1  # + the watch
    return api


def run(redis_url: str, n: int, workdir: Path, jobs_peer: bool = True) -> dict[str, Any]:
    kubeconfig = workdir / "kubeconfig"
    cluster_start_s = _up(kubeconfig)
    env = env_with_tools(kubeconfig)
    procs: list[Proc] = []
    try:
        _kubectl(
            env,
            "apply",
            "--server-side",
            "-f",
            str(Path(__file__).resolve().parent.parent / "crds"),
        )
        _kubectl(env, "wait", "--for=condition=Established", "crd", "--all")
        for ns in ("bench", "bare", "bare-2", "warm-up", "jobs"):
            _kubectl(env, "create", "namespace", ns)
        api = _client(kubeconfig)
        custom = k8s.CustomObjectsApi(api)
        # A cold API server (and client) would flatter the ratio; of two rounds (no operator
        # runs yet, nor ever watches these namespaces) the faster is the baseline, so that a
        # burst of load from elsewhere on the machine flatters nothing either.
        _create_tasks(custom, "warm-up", n)
        plane0 = _control_plane_cpu()
        bare_s = min(_create_tasks(custom, ns, n) for ns in ("bare", "bare-2"))
        bare_plane = _per_object_us(plane0, _control_plane_cpu(), 2 * n)
        metrics = free_port()
        operator = start_operator(
            redis_url,
            kubeconfig,
            workdir / "operator.log",
            "--metrics-port",
            str(metrics),
            "--namespace",
            "bench",
        )
        procs.append(operator)
        if ON_OPERATOR is not None:
            ON_OPERATOR(operator)
        workers = [
            start_worker(
                redis_url,
                "bench",
                workdir / f"worker{i}.log",
                concurrency=16,
                app="taskorch_examples:app",
            )
            for i in range(2)
        ]
        procs.extend(workers)
        time.sleep(1.0)  # the workers' imports and first claims out of the CPU figures

        follow = Follower(
            n,
            functools.partial(
                custom.list_namespaced_custom_object, "taskorch.io", "v1alpha1", "bench", "tasks"
            ),
            _task_succeeded,
        )
        assert operator.process is not None
        cpu0 = _tree_cpu_seconds(operator.process.pid)
        workers0 = sum(_tree_cpu_seconds(w.process.pid) for w in workers if w.process)
        plane0 = _control_plane_cpu()
        t0 = time.perf_counter()
        follow.start()
        create_s = _create_tasks(custom, "bench", n)
        follow.join(timeout=600)
        operator_cpu = _tree_cpu_seconds(operator.process.pid) - cpu0
        workers_cpu = sum(_tree_cpu_seconds(w.process.pid) for w in workers if w.process) - workers0
        plane = _per_object_us(plane0, _control_plane_cpu(), n)
        tasks = follow.figures(t0, "succeeded")
        writes = _status_writes(metrics)
        for p in procs:
            p.stop()
        procs.clear()
        tasks_per_s = n / tasks["seconds"]
        result: dict[str, Any] = {
            "tasks": n,
            "succeeded": tasks["done"],
            "control_plane_start_s": round(cluster_start_s, 2),
            "client_threads": CLIENT_THREADS,
            "bare_creates_per_s": round(n / bare_s, 1),
            "create_s": round(create_s, 2),
            "all_succeeded_s": tasks["all_succeeded_s"],
            "tasks_per_s": round(tasks_per_s, 1),
            "vs_bare_creates": round(tasks_per_s / (n / bare_s), 2),
            "create_to_succeeded_p50_s": tasks["create_to_succeeded_p50_s"],
            "create_to_succeeded_p99_s": tasks["create_to_succeeded_p99_s"],
            "status_writes_per_task": round(writes / n, 2),
            "operator_cpu_us_per_task": round(operator_cpu / n * 1e6),
            "workers_cpu_us_per_task": round(workers_cpu / n * 1e6),
            "control_plane_cpu_us_per_task": plane,
            "control_plane_cpu_us_per_bare_create": bare_plane,
        }
        if not jobs_peer:
            return result
        # The peer, as kube-controller-manager ships (its client limited to 20 requests/s,
        # burst 30, which the job controller shares with every other controller) ...
        jobs = _jobs(api, n, "jobs")
        result["jobs_default_qps"] = jobs
        result["tasks_vs_jobs_default_qps"] = round(tasks_per_s / jobs.pop("per_s_unrounded"), 2)
        # ... and on a new control plane whose controller manager and scheduler may send 5000
        # requests/s: what Jobs cost when nothing but this machine holds them back.
        _up(kubeconfig, LIFTED)
        env = env_with_tools(kubeconfig)
        for ns in ("jobs", "warm-up"):
            _kubectl(env, "create", "namespace", ns)
        api = _client(kubeconfig)
        _jobs(api, max(n // 5, 1), "warm-up")  # a cold API server would not be fair to Jobs
        jobs = _jobs(api, n, "jobs")
        result["jobs_lifted_qps"] = jobs
        result["tasks_vs_jobs_lifted_qps"] = round(tasks_per_s / jobs.pop("per_s_unrounded"), 2)
        result["note"] = (
            "latency: an object's ADDED watch event → the first event showing it done; all_*_s "
            "runs from the first create to the last done. kwok completes a Job's pod at once "
            "(no image pull, no container start or run time), which flatters Jobs."
        )
        return result
    finally:
        for p in procs:
            p.kill()
        subprocess.run([str(TOOLS / "cluster.sh"), "down", CLUSTER], capture_output=True)


def _jobs(api: k8s.ApiClient, n: int, namespace: str) -> dict[str, Any]:
    """N Jobs by the same threads (the operator stopped), timed from the first create to the
    last Complete. Responses are not turned into models, in the creates and in the watch alike:
    the client's model building would cost this process CPU that the Tasks' dict-returning calls
    do not."""
    batch = k8s.BatchV1Api(api)

    def create(i: int) -> None:
        _ = batch.create_namespaced_job(namespace, _job(f"j{i}"), _preload_content=False).data

    follow = Follower(n, functools.partial(batch.list_namespaced_job, namespace), _job_complete)
    plane0 = _control_plane_cpu()
    t0 = time.perf_counter()
    follow.start()
    create_s = _create_all(create, n)
    follow.join(timeout=900)
    plane = _per_object_us(plane0, _control_plane_cpu(), n)
    jobs = follow.figures(t0, "complete")
    return {
        "jobs": n,
        "complete": jobs["done"],
        "create_s": round(create_s, 2),
        "all_complete_s": jobs["all_complete_s"],
        "jobs_per_s": jobs["per_s"],
        "per_s_unrounded": n / jobs["seconds"],
        "create_to_complete_p50_s": jobs["create_to_complete_p50_s"],
        "create_to_complete_p99_s": jobs["create_to_complete_p99_s"],
        "control_plane_cpu_us_per_job": plane,
    }
