"""Command tasks through the Task API on the real API server: a Task with spec.command runs on a
worker that allows it and shows its output in status; bad specs are refused at `kubectl apply`,
naming the field."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.e2e.conftest import Cluster
from tests.e2e.processes import Proc


def task(name: str, spec: dict[str, object]) -> str:
    return json.dumps(
        {
            "apiVersion": "taskorch.io/v1alpha1",
            "kind": "Task",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


@pytest.mark.usefixtures("operator")
def test_a_command_task_succeeds_with_its_stdout_in_status(
    cluster: Cluster, namespace: str, workers: Callable[..., Proc]
) -> None:
    workers(args=("--allow-commands", "echo"))
    spec = {"command": ["echo", "Hello from worker"], "timeout": "30s"}
    cluster.kubectl("apply", "-f", "-", input=task("hello", spec), namespace=namespace)
    cluster.kubectl(
        "wait", "--for=condition=Succeeded", "task/hello", "--timeout=60s", namespace=namespace
    )
    status = cluster.get_json("task/hello", namespace=namespace)["status"]
    assert status["result"] == {"exitCode": 0, "stdout": "Hello from worker\n", "stderr": ""}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"type": "noop", "command": ["echo"]},
            "set exactly one of type (a handler), command and container",
        ),
        (
            {"command": []},
            "spec.command: Invalid value: 0: spec.command in body should have at least 1 items",
        ),
        ({}, "set exactly one of type (a handler), command and container"),
        (
            {"command": ["echo"], "payload": {"a": 1}},
            "a command takes env and workingDir, not payload",
        ),
        (
            {"type": "noop", "workingDir": "/tmp"},
            "a handler (type) takes payload, not env or workingDir",
        ),
    ],
)
def test_bad_command_specs_are_refused_at_apply(
    cluster: Cluster, namespace: str, spec: dict[str, object], message: str
) -> None:
    proc = cluster.kubectl(
        "apply", "-f", "-", input=task("bad", spec), namespace=namespace, check=False
    )
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


@pytest.mark.usefixtures("operator")
def test_a_workflow_mixes_handler_and_command_steps(
    cluster: Cluster, namespace: str, workers: Callable[..., Proc]
) -> None:
    workers(args=("--allow-commands", "echo,wc"))
    workflow = {
        "apiVersion": "taskorch.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "mixed"},
        "spec": {
            "steps": [
                {
                    "name": "fetch",
                    "type": "download_image",
                    "payload": {"image_url": "s3://b/cat.jpg"},
                },
                {
                    "name": "inspect",
                    "dependsOn": ["fetch"],
                    "command": ["echo", "got", "{{ steps.fetch.result.path }}"],
                },
                {
                    "name": "square",
                    "type": "square",
                    "dependsOn": ["inspect"],
                    "payload": {"value": 3},
                },
            ]
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(workflow), namespace=namespace)
    cluster.kubectl(
        "wait", "--for=condition=Succeeded", "workflow/mixed", "--timeout=60s", namespace=namespace
    )
    status = cluster.get_json("workflow/mixed", namespace=namespace)["status"]
    steps = {s["name"]: s for s in status["steps"]}
    assert [steps[n]["phase"] for n in ("fetch", "inspect", "square")] == ["Succeeded"] * 3
    started = [steps[n]["startTime"] for n in ("fetch", "inspect", "square")]
    assert started == sorted(started)  # in dependency order
    assert status["result"] == {"square": 9}
