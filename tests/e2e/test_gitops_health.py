"""GitOps health on real status objects: Argo CD's health scripts (the chart's Lua, run by a
real Lua runtime) and Flux's kstatus rules read a running Task or Workflow as in progress, a
succeeded one as healthy and a failed one as failed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lupa

from tests.e2e.conftest import Cluster
from tests.e2e.processes import Proc
from tests.e2e.test_tasks import apply_task, wait_object, wait_phase
from tests.e2e.test_workflows import a_step_running, apply_workflow, wait_workflow
from tests.support import REPO

SCRIPTS = REPO / "charts" / "taskorch" / "argocd"


def argocd_health(kind: str, obj: dict[str, Any]) -> str:
    """Runs the script the way Argo CD does: a global `obj`, a table returned."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    script = (SCRIPTS / f"health-{kind}.lua").read_text()
    result = lua.execute(script)
    return str(result["status"])


def kstatus(obj: dict[str, Any]) -> str:
    """kstatus' rules for a custom resource (sigs.k8s.io/cli-utils/pkg/kstatus): generation not
    yet observed or Reconciling=True → InProgress; Stalled=True → Failed; Ready=False →
    InProgress; otherwise Current."""
    status = obj.get("status") or {}
    if status.get("observedGeneration", 0) < obj["metadata"].get("generation", 0):
        return "InProgress"
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    if conditions.get("Reconciling") == "True":
        return "InProgress"
    if conditions.get("Stalled") == "True":
        return "Failed"
    if conditions.get("Ready") == "False":
        return "InProgress"
    return "Current"


def test_argocd_and_kstatus_read_tasks_and_workflows_right(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc]
) -> None:
    workers(concurrency=8)
    apply_task(cluster, namespace, "fine", {"type": "noop"})
    apply_task(cluster, namespace, "doomed", {"type": "always_fail", "retry": {"maxAttempts": 1}})
    apply_task(cluster, namespace, "busy", {"type": "slow", "payload": {"seconds": 60}})
    apply_task(cluster, namespace, "held", {"type": "noop", "suspend": True})
    slow_step = {"name": "wait", "type": "slow", "payload": {"seconds": 60}}
    apply_workflow(cluster, namespace, "wf-running", {"steps": [slow_step]})
    apply_workflow(cluster, namespace, "wf-ok", {"steps": [{"name": "a", "type": "noop"}]})
    apply_workflow(
        cluster,
        namespace,
        "wf-failed",
        {"steps": [{"name": "a", "type": "always_fail", "retry": {"maxAttempts": 1}}]},
    )
    tasks = {
        "fine": wait_phase(cluster, namespace, "fine", "Succeeded"),
        "doomed": wait_phase(cluster, namespace, "doomed", "DeadLettered"),
        "busy": wait_phase(cluster, namespace, "busy", "Running"),
        "held": wait_phase(cluster, namespace, "held", "Pending"),
    }

    flows = {
        "wf-ok": wait_workflow(cluster, namespace, "wf-ok", "Succeeded"),
        "wf-failed": wait_workflow(cluster, namespace, "wf-failed", "Failed"),
        "wf-running": wait_object(
            cluster, namespace, "workflow/wf-running", a_step_running, "to run its step"
        ),
    }
    assert {n: (argocd_health("task", t), kstatus(t)) for n, t in tasks.items()} == {
        "fine": ("Healthy", "Current"),
        "doomed": ("Degraded", "Failed"),
        "busy": ("Progressing", "InProgress"),
        "held": ("Suspended", "InProgress"),
    }
    assert {n: (argocd_health("workflow", w), kstatus(w)) for n, w in flows.items()} == {
        "wf-ok": ("Healthy", "Current"),
        "wf-failed": ("Degraded", "Failed"),
        "wf-running": ("Progressing", "InProgress"),
    }
    # what `kubectl wait --for=condition=Ready` (and Flux's health checks) wait for
    ready = {c["type"]: c["status"] for c in tasks["fine"]["status"]["conditions"]}
    assert ready["Ready"] == "True" and "Stalled" not in ready and "Reconciling" not in ready
