"""`taskorch server` against the real API server: installed from the chart (its ServiceAccount
and least RBAC), run as a local process with that account's token, called with the tokens of
ServiceAccounts that real Roles allow or do not allow to act, beside a real worker and Redis."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster, Server, caller_token
from tests.e2e.processes import Proc


@pytest.fixture
def other_namespace(cluster: Cluster, namespace: str) -> Iterator[str]:
    name = f"{namespace}-b"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_submit_over_http_runs_on_a_worker_and_rbac_decides_every_call(
    cluster: Cluster,
    namespace: str,
    other_namespace: str,
    server: Server,
    workers: Callable[..., Proc],
) -> None:
    submitter = caller_token(cluster, namespace, "ci", ["create", "get"])
    reader = caller_token(cluster, namespace, "viewer", ["get"])
    # The same account is allowed everything in namespace B: it must still not reach A's work.
    stranger = caller_token(cluster, other_namespace, "ci", ["create", "get", "update"])
    workers()
    tasks = f"/api/v1/namespaces/{namespace}/tasks"

    status, sub = server.call("POST", tasks, submitter, {"type": "square", "payload": {"value": 7}})
    assert status == 201, sub
    status, done = server.call("GET", f"{tasks}/{sub['id']}/wait?timeout=30", submitter)
    assert status == 200 and done["state"] == "succeeded" and done["result"] == 49, done

    status, err = server.call("POST", tasks, submitter, {"type": "square", "priority": 12})
    assert status == 422
    assert any(e["loc"][:2] == ["body", "priority"] for e in err["detail"]), err

    assert server.call("POST", tasks, None, {"type": "square"})[0] == 401
    assert server.call("GET", f"{tasks}/{sub['id']}", "not-a-token")[0] == 401

    status, err = server.call("POST", tasks, reader, {"type": "square"})
    assert status == 403
    assert err["detail"].startswith(
        f"system:serviceaccount:{namespace}:viewer may not create tasks.taskorch.io"
    ), err
    assert server.call("GET", f"{tasks}/{sub['id']}", reader)[0] == 200
    assert server.call("POST", f"{tasks}/{sub['id']}/cancel", submitter)[0] == 403  # no update

    assert server.call("GET", f"{tasks}/{sub['id']}", stranger)[0] == 403
    assert server.call("POST", tasks, stranger, {"type": "square"})[0] == 403
    status, _ = server.call(
        "POST", f"/api/v1/namespaces/{other_namespace}/tasks", stranger, {"type": "square"}
    )
    assert status == 201  # its own namespace: allowed


def test_the_server_account_may_review_and_read_but_never_write(
    cluster: Cluster, namespace: str, server: Server, tmp_path: Path
) -> None:
    account = f"system:serviceaccount:{namespace}:{server.release}-server"

    def can(*args: str) -> bool:
        proc = cluster.kubectl("auth", "can-i", *args, "--as", account, check=False)
        return proc.stdout.strip() == "yes"

    assert can("create", "tokenreviews.authentication.k8s.io")
    assert can("create", "subjectaccessreviews.authorization.k8s.io")
    for kind in ("tasks", "workflows", "taskqueues", "schedules", "workerpools"):
        assert can("list", f"{kind}.taskorch.io", "-n", namespace)
        assert not can("create", f"{kind}.taskorch.io", "-n", namespace)
        assert not can("patch", f"{kind}.taskorch.io", "-n", namespace)
    assert not can("get", "secrets", "-n", namespace)
    assert not can("impersonate", "serviceaccounts", "-n", namespace)
    # And for real, with its token: the API server refuses a Task created as the server.
    kubeconfig = cluster.serviceaccount_kubeconfig(
        namespace, f"{server.release}-server", tmp_path / "server.kubeconfig"
    )
    task = {
        "apiVersion": "taskorch.io/v1alpha1",
        "kind": "Task",
        "metadata": {"name": "as-server", "namespace": namespace},
        "spec": {"type": "square"},
    }
    proc = subprocess.run(
        ["kubectl", "create", "-f", "-"],
        input=json.dumps(task),
        capture_output=True,
        text=True,
        env={**cluster.env, "KUBECONFIG": str(kubeconfig)},
    )
    assert proc.returncode != 0 and "forbidden" in proc.stderr, proc.stderr


def test_changes_to_objects_go_with_the_callers_own_token(
    cluster: Cluster, namespace: str, server: Server
) -> None:
    """Pausing a queue a TaskQueue declares patches the TaskQueue, and a dashboard's "run now"
    creates a Schedule's child: both sent with the caller's token, so the API server applies
    the caller's RBAC (the server's own account may not write either)."""
    queue = {
        "apiVersion": "taskorch.io/v1alpha1",
        "kind": "TaskQueue",
        "metadata": {"name": "emails"},
        "spec": {},
    }
    schedule = {
        "apiVersion": "taskorch.io/v1alpha1",
        "kind": "Schedule",
        "metadata": {"name": "nightly"},
        "spec": {"schedule": "@daily", "taskTemplate": {"spec": {"type": "square"}}},
    }
    for obj in (queue, schedule):
        cluster.kubectl("apply", "-f", "-", input=json.dumps(obj), namespace=namespace)
    every = ("tasks", "taskqueues", "schedules")
    # RBAC's `update` passes the server's own check; the patch itself needs `patch`.
    no_patch = caller_token(cluster, namespace, "updater", ["get", "list", "update"], every)
    operator = caller_token(cluster, namespace, "ops", ["get", "list", "update", "patch"], every)
    pause = f"/api/v1/namespaces/{namespace}/queues/emails/pause"

    status, err = server.call("POST", pause, no_patch)
    assert status == 403 and "cannot patch resource" in err["detail"], err
    assert cluster.get_json("taskqueue/emails", namespace=namespace)["spec"]["paused"] is False
    status, body = server.call("POST", pause, operator)
    assert status == 200, body
    assert cluster.get_json("taskqueue/emails", namespace=namespace)["spec"]["paused"] is True

    # The dashboard's "run now": creating the child needs `create tasks` (ops has none).
    def trigger(token: str) -> str:
        req = urllib.request.Request(
            f"{server.url}/ns/{namespace}/schedules/nightly/trigger",
            method="POST",
            headers={"Authorization": f"Bearer {token}", "HX-Request": "true"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read().decode()

    assert "cannot create resource" in trigger(operator)
    creator = caller_token(cluster, namespace, "creator", ["get", "list", "create"], every)
    assert "created" in trigger(creator)
    children = cluster.get_json("tasks", "-l", "taskorch.io/schedule=nightly", namespace=namespace)
    assert len(children["items"]) == 1
