"""Tracing through the operator and the HTTP API, on the real control plane: a Task object's
trace id is its UID, a Workflow's span is the parent of its steps' enqueues, and a caller's
`traceparent` header puts an HTTP-submitted task into the caller's trace."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskorch.tracing import workflow_parent
from tests.e2e.conftest import Cluster, Server, caller_token, serving
from tests.e2e.processes import Proc, base_env, start_operator
from tests.support import REPO, OtlpReceiver, Span, free_port, wait_for


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.close()


def spans_in(receiver: OtlpReceiver, trace_id: str, *names: str) -> list[Span] | None:
    """The spans of a trace once every name in `names` is among them."""
    spans = [s for s in receiver.spans if s.trace_id == trace_id]
    return spans if set(names) <= {s.name for s in spans} else None


def test_task_objects_workflows_and_http_submits_are_traced(
    cluster: Cluster,
    namespace: str,
    redis_url: str,
    receiver: OtlpReceiver,
    workers: Callable[..., Proc],
    tmp_path: Path,
) -> None:
    operator = start_operator(
        redis_url, cluster.kubeconfig, tmp_path / "operator.log", **receiver.env("operator")
    )
    try:
        workers(**receiver.env("worker"))
        task = {
            "apiVersion": "taskorch.io/v1alpha1",
            "kind": "Task",
            "metadata": {"name": "traced"},
            "spec": {"type": "square", "payload": {"value": 4}},
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(task), namespace=namespace)
        cluster.kubectl(
            "wait", "--for=condition=Succeeded", "task/traced", "--timeout=60s", namespace=namespace
        )
        uid = cluster.get_json("task/traced", namespace=namespace)["metadata"]["uid"]
        trace_id = uid.replace("-", "")
        spans = wait_for(
            lambda: spans_in(receiver, trace_id, "taskorch.enqueue default", "taskorch.settle"),
            timeout=30,
            what="the Task's spans under its UID",
        )
        by_name = {s.name: s for s in spans}
        assert by_name["taskorch.enqueue default"].service == "operator"
        assert by_name["taskorch.run square"].service == "worker"

        cluster.kubectl(
            "apply", "-f", str(REPO / "examples" / "workflow.yaml"), namespace=namespace
        )
        cluster.kubectl(
            "wait",
            "--for=condition=Succeeded",
            "workflow/image-processing-pipeline",
            "--timeout=60s",
            namespace=namespace,
        )
        wf_uid = cluster.get_json("workflow/image-processing-pipeline", namespace=namespace)[
            "metadata"
        ]["uid"]
        wf_trace = wf_uid.replace("-", "")
        spans = wait_for(
            lambda: spans_in(
                receiver,
                wf_trace,
                "taskorch.workflow image-processing-pipeline",
                "taskorch.run download_image",
                "taskorch.run resize_image",
                "taskorch.run upload_image",
            ),
            timeout=30,
            what="the workflow's spans",
        )
        [root] = [s for s in spans if s.name.startswith("taskorch.workflow")]
        assert root.parent_id == "" and root.span_id == workflow_parent(wf_uid).split("-")[2]
        enqueues = [s for s in spans if s.name.startswith("taskorch.enqueue")]
        assert len(enqueues) == 3 and {s.parent_id for s in enqueues} == {root.span_id}
    finally:
        operator.kill()


def test_a_callers_traceparent_header_carries_into_the_task(
    cluster: Cluster,
    namespace: str,
    redis_url: str,
    receiver: OtlpReceiver,
    workers: Callable[..., Proc],
    tmp_path: Path,
) -> None:
    token = caller_token(cluster, namespace, "ci", ["create", "get"])
    port = free_port()
    env = base_env(redis_url, cluster.kubeconfig, receiver.env("server"))
    server = Proc(["server", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path / "s.log")
    server.start()
    try:
        api = Server(f"http://127.0.0.1:{port}", "")
        wait_for(lambda: serving(api.url), timeout=30, what="the server")
        workers(**receiver.env("worker"))
        caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        status, sub = api.call(
            "POST",
            f"/api/v1/namespaces/{namespace}/tasks",
            token,
            {"type": "square", "payload": {"value": 5}},
            headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"},
        )
        assert status == 201, sub
        spans = wait_for(
            lambda: spans_in(receiver, caller_trace, "taskorch.enqueue default", "taskorch.settle"),
            timeout=30,
            what="the task's spans in the caller's trace",
        )
        by_name = {s.name: s for s in spans}
        assert by_name["taskorch.enqueue default"].parent_id == caller_span
        assert by_name["taskorch.enqueue default"].service == "server"
        assert by_name["taskorch.run square"].attributes["taskorch.task.id"] == sub["id"]
    finally:
        server.kill()
