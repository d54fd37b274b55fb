"""Container tasks on the real API server: the operator (authenticated as the chart's
ServiceAccount, container tasks on) runs each attempt as a Job owned by the Task, and kwok's
stages (tests/tools/kwok-stages.yaml) end the Job's pod as a test asks: complete, fail with an
exit code, OOMKilled, keep running, or wait in ImagePullBackOff. kwok never runs the image: what
these tests show is everything around it (the Job, its ownership and cleanup, the status)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, install_without_workloads
from tests.e2e.processes import Proc, start_operator
from tests.e2e.test_tasks import apply_task, wait_phase
from tests.support import REPO, wait_for

FAIL = "pod-container-running-failed.stage.kwok.x-k8s.io"  # kwok's chaos stage


def failing(code: int, reason: str = "Error", message: str = "") -> dict[str, Any]:
    """Pod labels and annotations that make kwok fail the container as asked."""
    return {
        "labels": {FAIL: "true"},
        "annotations": {
            f"{FAIL}/exit-code": str(code),
            f"{FAIL}/reason": reason,
            f"{FAIL}/message": message or reason,
            f"{FAIL}/delay": "100ms",
            f"{FAIL}/jitter-delay": "0ms",
        },
    }


@pytest.fixture
def jobs_operator(
    cluster: Cluster, namespace: str, redis_url: str, tmp_path: Path
) -> Iterator[Proc]:
    """The chart installed with operator.containerTasks.enabled (a Role in the namespace), and
    the operator run with its ServiceAccount's token: real RBAC decides what it may do."""
    release = install_without_workloads(
        cluster,
        namespace,
        redis_url,
        f"operator.watchNamespaces={{{namespace}}}",
        "operator.containerTasks.enabled=true",
    )
    kubeconfig = cluster.serviceaccount_kubeconfig(
        namespace, f"{release}-operator", tmp_path / "operator.kubeconfig"
    )
    proc = start_operator(
        redis_url,
        kubeconfig,
        tmp_path / "operator.log",
        "--namespace",
        namespace,
        TASKORCH_CONTAINER_TASKS="true",
        TASKORCH_CONTAINER_POLL_SECONDS="0.3",
        TASKORCH_IMAGE_PULL_GRACE_SECONDS="2",
    )
    try:
        yield proc
    finally:
        proc.kill()
        cluster.helm("uninstall", release, "--namespace", namespace, check=False)


def jobs_of(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("jobs", namespace=namespace)["items"]
    return sorted(items, key=lambda j: j["metadata"]["creationTimestamp"])


@pytest.mark.usefixtures("jobs_operator")
def test_a_container_task_runs_as_a_job_owned_by_the_task(cluster: Cluster, namespace: str) -> None:
    container = {
        "image": "jrottenberg/ffmpeg:7",
        "args": ["-i", "in.mp4", "out.webm"],
        "resources": {"limits": {"cpu": "2"}},
    }
    apply_task(cluster, namespace, "transcode", {"container": container, "timeout": "5m"})
    cluster.kubectl(
        "wait", "--for=condition=Succeeded", "task/transcode", "--timeout=60s", namespace=namespace
    )
    uid = cluster.get_json("task/transcode", namespace=namespace)["metadata"]["uid"]
    [job] = jobs_of(cluster, namespace)
    assert job["metadata"]["name"] == "transcode-1"
    [owner] = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Task", "transcode", uid)
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 300
    [c] = job["spec"]["template"]["spec"]["containers"]
    assert (c["image"], c["args"]) == ("jrottenberg/ffmpeg:7", ["-i", "in.mp4", "out.webm"])
    assert c["resources"]["limits"]["cpu"] == "2"
    status = cluster.get_json("task/transcode", namespace=namespace)["status"]
    assert status["result"]["exitCode"] == 0 and status["result"]["job"] == "transcode-1"
    wide = cluster.kubectl("get", "task/transcode", "-o", "wide", namespace=namespace).stdout
    header, row = wide.splitlines()
    assert "IMAGE" in header.split() and "jrottenberg/ffmpeg:7" in row.split()
    assert status["attempts"] == 1

    # Deleting the Task deletes its Job (Kubernetes' garbage collector, by the owner reference).
    cluster.kubectl("delete", "task/transcode", namespace=namespace)
    wait_for(lambda: jobs_of(cluster, namespace) == [], timeout=60, what="the Job deleted")


@pytest.mark.usefixtures("jobs_operator")
def test_a_failing_container_is_retried_with_a_job_per_attempt_then_dead_lettered(
    cluster: Cluster, namespace: str
) -> None:
    retry = {"maxAttempts": 2, "initialDelay": "100ms", "jitter": False}
    container = {"image": "busybox:1.36", "command": ["false"], **failing(3, message="boom")}
    apply_task(cluster, namespace, "broken", {"container": container, "retry": retry})
    status = wait_phase(cluster, namespace, "broken", "DeadLettered")["status"]
    assert status["attempts"] == 2
    assert status["lastError"]["type"] == "ContainerFailed"
    assert status["lastError"]["message"].startswith("exit code 3: boom")
    assert status["lastError"]["traceback"] == "boom"  # the termination message, not ours
    jobs = jobs_of(cluster, namespace)
    assert [j["metadata"]["name"] for j in jobs] == ["broken-1", "broken-2"]
    assert all(j["status"]["conditions"][0]["type"] in ("Failed", "FailureTarget") for j in jobs)


@pytest.mark.usefixtures("jobs_operator")
def test_an_oom_killed_container_says_so(cluster: Cluster, namespace: str) -> None:
    container = {"image": "busybox:1.36", **failing(137, "OOMKilled")}
    spec = {"retry": {"maxAttempts": 1}}
    apply_task(cluster, namespace, "hungry", {"container": container, **spec})
    status = wait_phase(cluster, namespace, "hungry", "DeadLettered")["status"]
    assert status["lastError"]["type"] == "OOMKilled"
    assert "ran out of memory (exit code 137)" in status["lastError"]["message"]


@pytest.mark.usefixtures("jobs_operator")
def test_cancelling_a_running_container_task_deletes_its_job(
    cluster: Cluster, namespace: str
) -> None:
    container = {"image": "busybox:1.36", "labels": {"kwok.taskorch.io/keep-running": "true"}}
    apply_task(cluster, namespace, "long", {"container": container})
    wait_phase(cluster, namespace, "long", "Running")
    wait_for(lambda: jobs_of(cluster, namespace), timeout=30, what="the Job")
    cluster.kubectl(
        "patch", "task/long", "--type=merge", "-p", '{"spec":{"cancel":true}}', namespace=namespace
    )
    wait_phase(cluster, namespace, "long", "Cancelled")
    wait_for(lambda: jobs_of(cluster, namespace) == [], timeout=30, what="the Job deleted")


@pytest.mark.usefixtures("jobs_operator")
def test_the_timeout_is_the_jobs_deadline(cluster: Cluster, namespace: str) -> None:
    container = {"image": "busybox:1.36", "labels": {"kwok.taskorch.io/keep-running": "true"}}
    spec = {"timeout": "2s", "retry": {"maxAttempts": 1}}
    apply_task(cluster, namespace, "slow", {"container": container, **spec})
    status = wait_phase(cluster, namespace, "slow", "DeadLettered")["status"]
    assert status["lastError"]["type"] == "DeadlineExceeded"
    [job] = jobs_of(cluster, namespace)
    assert job["spec"]["activeDeadlineSeconds"] == 2


@pytest.mark.usefixtures("jobs_operator")
def test_an_image_that_never_pulls_fails_the_attempt(cluster: Cluster, namespace: str) -> None:
    container = {
        "image": "registry.invalid/missing:1",
        "labels": {"kwok.taskorch.io/image-pull-backoff": "true"},
    }
    spec = {"retry": {"maxAttempts": 1}}
    apply_task(cluster, namespace, "nopull", {"container": container, **spec})
    status = wait_phase(cluster, namespace, "nopull", "DeadLettered")["status"]
    assert status["lastError"]["type"] == "ImagePullBackOff"
    assert 'Back-off pulling image "registry.invalid/missing:1"' in status["lastError"]["message"]
    # the kubelet would retry the pull forever: the attempt's Job is deleted
    wait_for(lambda: jobs_of(cluster, namespace) == [], timeout=30, what="the Job deleted")


def test_an_operator_restart_waits_on_the_running_job_again(
    cluster: Cluster, namespace: str, jobs_operator: Proc
) -> None:
    container = {"image": "busybox:1.36", "labels": {"kwok.taskorch.io/keep-running": "true"}}
    apply_task(cluster, namespace, "survivor", {"container": container})
    wait_phase(cluster, namespace, "survivor", "Running")
    [job] = wait_for(lambda: jobs_of(cluster, namespace), timeout=30, what="the Job")

    def running_pods() -> list[dict[str, Any]]:
        selector = f"job-name={job['metadata']['name']}"
        pods = cluster.get_json("pods", "-l", selector, namespace=namespace)["items"]
        return [p for p in pods if p.get("status", {}).get("phase") == "Running"]

    [pod] = wait_for(running_pods, timeout=30, what="the Job's pod running")
    jobs_operator.stop()  # SIGTERM: the attempt is handed back, its Job left running
    jobs_operator.start()
    # Let the pod finish: without the label, kwok's default stage completes it.
    cluster.kubectl(
        "label",
        f"pod/{pod['metadata']['name']}",
        "kwok.taskorch.io/keep-running-",
        namespace=namespace,
    )
    status = wait_phase(cluster, namespace, "survivor", "Succeeded")["status"]
    assert status["result"]["job"] == job["metadata"]["name"]
    # the attempt the stop handed back, then the one that waited on the same Job
    assert [h["outcome"] for h in status["history"]] == ["Released", "Succeeded"]
    assert [j["metadata"]["name"] for j in jobs_of(cluster, namespace)] == ["survivor-1"]


@pytest.mark.usefixtures("jobs_operator")
def test_a_workflow_mixes_handler_and_container_steps(
    cluster: Cluster, namespace: str, workers: Callable[..., Proc]
) -> None:
    workers()
    example = REPO / "examples" / "workflow-containers.yaml"
    cluster.kubectl("apply", "-f", str(example), namespace=namespace)
    cluster.kubectl(
        "wait",
        "--for=condition=Succeeded",
        "workflow/media-pipeline",
        "--timeout=90s",
        namespace=namespace,
    )
    status = cluster.get_json("workflow/media-pipeline", namespace=namespace)["status"]
    steps = {s["name"]: s for s in status["steps"]}
    started = [steps[n]["startTime"] for n in ("fetch", "transcode", "notify")]
    assert started == sorted(started)
    [job] = jobs_of(cluster, namespace)
    assert job["metadata"]["name"] == "media-pipeline-transcode-1"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Workflow"
    uid = cluster.get_json("workflow/media-pipeline", namespace=namespace)["metadata"]["uid"]
    fetched = f"/data/{uid}.fetch/cat.jpg"  # download_image's result (worker-image/examples)
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["-i", fetched]


@pytest.mark.usefixtures("operator")
def test_an_operator_without_container_tasks_refuses_them(cluster: Cluster, namespace: str) -> None:
    apply_task(cluster, namespace, "off", {"container": {"image": "busybox:1.36"}})
    status = wait_phase(cluster, namespace, "off", "Failed")["status"]
    [cond] = [c for c in status["conditions"] if c["type"] == "Succeeded"]
    assert cond["reason"] == "ContainerTasksDisabled"
    assert "operator.containerTasks.enabled=true" in cond["message"]
    assert jobs_of(cluster, namespace) == []


def test_without_the_chart_value_the_operator_may_not_touch_jobs(
    cluster: Cluster, namespace: str, redis_url: str, tmp_path: Path
) -> None:
    release = install_without_workloads(
        cluster, namespace, redis_url, f"operator.watchNamespaces={{{namespace}}}"
    )
    try:
        sa = cluster.serviceaccount_kubeconfig(
            namespace, f"{release}-operator", tmp_path / "sa.kubeconfig"
        )
        as_operator = {**cluster.env, "KUBECONFIG": str(sa)}
        refused = Cluster(sa, as_operator).kubectl(
            "create", "job", "x", "--image=busybox:1.36", namespace=namespace, check=False
        )
        assert refused.returncode != 0 and "forbidden" in refused.stderr, refused.stderr
        for verb in ("create", "delete", "list"):
            can = Cluster(sa, as_operator).kubectl(
                "auth", "can-i", verb, "jobs.batch", namespace=namespace, check=False
            )
            assert can.stdout.strip() == "no", (verb, can.stdout)
    finally:
        cluster.helm("uninstall", release, "--namespace", namespace, check=False)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"type": "noop", "container": {"image": "busybox:1.36"}},
            "set exactly one of type (a handler), command and container",
        ),
        ({"container": {"args": ["x"]}}, "spec.container.image: Required value"),
        ({"container": {"image": ""}}, "spec.container.image in body should be at least 1 chars"),
        ({"container": {"image": "i"}, "queue": "fast"}, "leave queue unset"),
        ({"container": {"image": "i"}, "payload": {"a": 1}}, "no payload or payloadFrom"),
    ],
)
def test_bad_container_specs_are_refused_at_apply(
    cluster: Cluster, namespace: str, spec: dict[str, Any], message: str
) -> None:
    body = json.dumps(
        {
            "apiVersion": "taskorch.io/v1alpha1",
            "kind": "Task",
            "metadata": {"name": "bad"},
            "spec": spec,
        }
    )
    proc = cluster.kubectl("apply", "-f", "-", input=body, namespace=namespace, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_a_cancel_while_the_operator_is_away_still_deletes_the_job(
    cluster: Cluster, namespace: str, jobs_operator: Proc
) -> None:
    """The attempt was handed back (its Job left running) and is cancelled before any claim."""
    container = {"image": "busybox:1.36", "labels": {"kwok.taskorch.io/keep-running": "true"}}
    apply_task(cluster, namespace, "orphan", {"container": container})
    wait_phase(cluster, namespace, "orphan", "Running")
    wait_for(lambda: jobs_of(cluster, namespace), timeout=30, what="the Job")
    jobs_operator.stop()
    cluster.kubectl(
        "patch",
        "task/orphan",
        "--type=merge",
        "-p",
        '{"spec":{"cancel":true}}',
        namespace=namespace,
    )
    jobs_operator.start()
    wait_phase(cluster, namespace, "orphan", "Cancelled")
    wait_for(lambda: jobs_of(cluster, namespace) == [], timeout=30, what="the Job deleted")


@pytest.mark.usefixtures("jobs_operator")
def test_cancelling_a_workflow_deletes_its_running_container_steps_job(
    cluster: Cluster, namespace: str
) -> None:
    workflow = {
        "apiVersion": "taskorch.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "stuck"},
        "spec": {
            "steps": [
                {
                    "name": "long",
                    "container": {
                        "image": "busybox:1.36",
                        "labels": {"kwok.taskorch.io/keep-running": "true"},
                    },
                }
            ]
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(workflow), namespace=namespace)
    wait_for(lambda: jobs_of(cluster, namespace), timeout=30, what="the step's Job")
    cluster.kubectl(
        "patch",
        "workflow/stuck",
        "--type=merge",
        "-p",
        '{"spec":{"cancel":true}}',
        namespace=namespace,
    )
    wait_for(lambda: jobs_of(cluster, namespace) == [], timeout=30, what="the Job deleted")
    wait_for(
        lambda: (
            cluster.get_json("workflow/stuck", namespace=namespace)["status"]["phase"]
            == "Cancelled"
        ),
        timeout=30,
        what="the Workflow cancelled",
    )
