"""What a status write costs the API server, against a create: the CR path's ceiling.

On the bench's control plane with nothing else running (no operator, no workers, no watch), N
Tasks are created by 8 client threads, then each gets one status merge patch like the operator's
final one; the control plane's CPU (kube-apiserver + etcd) is read around each. Rounds alternate
between the Task CRD as shipped and the same CRD with every CEL rule removed (each under an API
group of its own), so that the machine's drift weighs on both. bench/README.md ("Why not
0.45×") has the figures.

    python -m bench.status_cost [N] [ROUNDS] [NAME=CRD-FILE ...]

NAME=CRD-FILE adds a variant, e.g. the CRDs of another commit (`git show REV:crds/...`).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from tests.support import env_with_tools

from bench.cr import (
    CLUSTER,
    TOOLS,
    _client,
    _control_plane_cpu,
    _create_all,
    _kubectl,
    _per_object_us,
    _task,
    _up,
)

CRDS = Path(__file__).resolve().parent.parent / "crds" / "taskorch.crds.yaml"
# A Succeeded Task's status as the operator writes it (the fields the CRD keeps).
STATUS: dict[str, Any] = {
    "phase": "Succeeded",
    "taskId": "01JF8ZQ3W5X9K2M4N6P8R0T2V4",
    "attempts": 1,
    "observedGeneration": 1,
    "startTime": "2026-12-05T10:00:00Z",
    "completionTime": "2026-12-05T10:00:01Z",
    "duration": "1s",
    "worker": "bench-worker-7f9c-1234",
    "conditions": [
        {
            "type": "Succeeded",
            "status": "True",
            "reason": "Succeeded",
            "message": "the handler returned",
            "lastTransitionTime": "2026-12-05T10:00:01Z",
            "observedGeneration": 1,
        }
    ],
}


def _strip_cel(node: Any) -> None:
    if isinstance(node, dict):
        node.pop("x-kubernetes-validations", None)
        for v in node.values():
            _strip_cel(v)
    elif isinstance(node, list):
        for v in node:
            _strip_cel(v)


def task_crd(crds: Path, group: str, cel: bool = True) -> dict[str, Any]:
    """The Task CRD of `crds`, served under API group `group`: every variant is installed once,
    side by side, because updating a CRD makes the API server rebuild its storage and list all
    its objects again, which would weigh on whichever variant ran next."""
    [crd] = [
        d for d in yaml.safe_load_all(crds.read_text()) if d["spec"]["names"]["kind"] == "Task"
    ]
    crd["metadata"] = {"name": f"tasks.{group}"}
    crd["spec"]["group"] = group
    if not cel:
        _strip_cel(crd["spec"]["versions"])
    return crd


def _plane_us(before: dict[str, float], n: int) -> int:
    """kube-apiserver + etcd CPU µs per object since `before` (the other processes idle here)."""
    each = _per_object_us(before, _control_plane_cpu(), n)
    return each.get("kube-apiserver", 0) + each.get("etcd", 0)


def one_round(custom: k8s.CustomObjectsApi, group: str, namespace: str, n: int) -> dict[str, float]:
    def create(i: int) -> None:
        body = {**_task(f"t{i}", namespace), "apiVersion": f"{group}/v1alpha1"}
        custom.create_namespaced_custom_object(group, "v1alpha1", namespace, "tasks", body)

    def patch(i: int) -> None:
        custom.patch_namespaced_custom_object_status(
            group, "v1alpha1", namespace, "tasks", f"t{i}", {"status": STATUS}
        )

    before = _control_plane_cpu()
    create_s = _create_all(create, n)
    create_us = _plane_us(before, n)
    before = _control_plane_cpu()
    patch_s = _create_all(patch, n)
    patch_us = _plane_us(before, n)
    return {
        "creates_per_s": round(n / create_s),
        "create_cpu_us": round(create_us),
        "patches_per_s": round(n / patch_s),
        "patch_cpu_us": round(patch_us),
        # a create and a status write per object, at these rates, against creates alone
        "ceiling_vs_bare_creates": round(create_s / (create_s + patch_s), 2),
    }


def run(
    n: int, rounds: int, workdir: Path, more: dict[str, Path] | None = None
) -> dict[str, list[dict[str, float]]]:
    kubeconfig = workdir / "kubeconfig"
    _up(kubeconfig)
    env = env_with_tools(kubeconfig)
    sources = {"shipped": (CRDS, True), "no CEL": (CRDS, False)}
    sources.update({name: (path, True) for name, path in (more or {}).items()})
    groups = {name: f"v{i}.cost.taskorch.io" for i, name in enumerate(sources)}
    crds = [task_crd(path, groups[name], cel) for name, (path, cel) in sources.items()]
    results: dict[str, list[dict[str, float]]] = {name: [] for name in sources}
    try:
        _kubectl(env, "apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(crds))
        _kubectl(env, "wait", "--for=condition=Established", "crd", "--all")
        custom = k8s.CustomObjectsApi(_client(kubeconfig))
        for group in groups.values():  # warm-up: each group's first requests cost more
            namespace = f"warm-up-{group.split('.')[0]}"
            _kubectl(env, "create", "namespace", namespace)
            one_round(custom, group, namespace, n // 4)
        for r in range(rounds):
            for name, group in groups.items():
                namespace = f"round-{r}-{group.split('.')[0]}"
                _kubectl(env, "create", "namespace", namespace)
                row = one_round(custom, group, namespace, n)
                results[name].append(row)
                print(f"round {r + 1} {name:8s} {row}", flush=True)
    finally:
        subprocess.run([str(TOOLS / "cluster.sh"), "down", CLUSTER], capture_output=True)
    return results


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        run(
            int(sys.argv[1]) if len(sys.argv) > 1 else 1000,
            int(sys.argv[2]) if len(sys.argv) > 2 else 5,
            Path(tmp),
            {k: Path(v) for k, v in (a.split("=", 1) for a in sys.argv[3:])},
        )
