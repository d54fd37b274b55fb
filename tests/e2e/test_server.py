"""`taskorch server` against the real API server: installed from the chart (its ServiceAccount
and least RBAC), run as a local process with that account's token, called with the tokens of
ServiceAccounts that real Roles allow or do not allow to act, beside a real worker and Redis."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Cluster
from tests.e2e.processes import Proc, base_env
from tests.support import REPO, free_port, wait_for

CHART = str(REPO / "charts" / "taskorch")


@dataclass
class Server:
    url: str
    release: str

    def call(
        self, method: str, path: str, token: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture
def server(cluster: Cluster, namespace: str, redis_url: str, tmp_path: Path) -> Iterator[Server]:
    release = f"taskorch-{namespace[-6:]}"  # cluster-scoped RBAC names must not collide
    cluster.helm(
        "install",
        release,
        CHART,
        "--namespace",
        namespace,
        *("--set", "server.enabled=true", "--set", "operator.replicas=0"),
        *("--set", "worker.enabled=false", "--set", "redis.mode=external"),
        *("--set", f"redis.external.url={redis_url}"),
    )
    kubeconfig = cluster.serviceaccount_kubeconfig(
        namespace, f"{release}-server", tmp_path / "server.kubeconfig"
    )
    port = free_port()
    proc = Proc(
        ["server", "--host", "127.0.0.1", "--port", str(port)],
        base_env(redis_url, kubeconfig),
        tmp_path / "server.log",
    ).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), timeout=30, what=f"taskorch server: {proc.logs()}")
        yield Server(url, release)
    finally:
        proc.kill()
        cluster.helm("uninstall", release, "--namespace", namespace, check=False)


def caller_token(cluster: Cluster, namespace: str, name: str, verbs: list[str]) -> str:
    """A ServiceAccount allowed `verbs` on tasks in `namespace` by a Role, and its token."""
    manifests = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name},
            "rules": [{"apiGroups": ["taskorch.io"], "resources": ["tasks"], "verbs": verbs}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]
    for m in manifests:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(m), namespace=namespace)
    return cluster.kubectl("create", "token", name, namespace=namespace).stdout.strip()


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
