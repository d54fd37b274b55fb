"""E2E fixtures: one real control plane per session (kwokctl), a namespace per test."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.e2e.processes import Proc, base_env, start_operator, start_worker
from tests.support import REPO, TOOLS, env_with_tools, free_port, wait_for

# Overridable so that two people can run e2e tests on one machine, each on a control plane.
CLUSTER = os.environ.get("TASKORCH_TEST_CLUSTER", "taskorch-test")
CHART = str(REPO / "charts" / "taskorch")


@dataclass
class Cluster:
    kubeconfig: Path
    env: dict[str, str]

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, namespace: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = ["kubectl", *(["-n", namespace] if namespace else []), *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, env=self.env)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["helm", *args], capture_output=True, text=True, env=self.env)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def serviceaccount_kubeconfig(self, namespace: str, account: str, path: Path) -> Path:
        """A kubeconfig that authenticates as a ServiceAccount with a TokenRequest token, the
        way the account's pods do, so what it may do is decided by real RBAC."""
        token = self.kubectl("create", "token", account, namespace=namespace).stdout.strip()
        admin = yaml.safe_load(self.kubeconfig.read_text())
        cluster = admin["clusters"][0]
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [cluster],
                    "users": [{"name": account, "user": {"token": token}}],
                    "contexts": [
                        {
                            "name": account,
                            "context": {"cluster": cluster["name"], "user": account},
                        }
                    ],
                    "current-context": account,
                }
            )
        )
        return path

    def get_json(self, *args: str, namespace: str | None = None) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json", namespace=namespace).stdout)

    def api_client(self) -> k8s.ApiClient:
        return k8s_config.new_client_from_config(config_file=str(self.kubeconfig))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    kubeconfig = Path(tmp_path_factory.mktemp("cluster")) / "kubeconfig"
    script = str(TOOLS / "cluster.sh")
    subprocess.run([script, "down", CLUSTER], check=False, capture_output=True)  # a stale run
    subprocess.run([script, "up", CLUSTER, str(kubeconfig)], check=True)
    c = Cluster(kubeconfig, env_with_tools(kubeconfig))
    c.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    c.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    try:
        yield c
    finally:
        subprocess.run([script, "down", CLUSTER], check=False)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def operator(cluster: Cluster, redis_url: str, tmp_path: Path) -> Iterator[Proc]:
    proc = start_operator(redis_url, cluster.kubeconfig, tmp_path / "operator.log")
    yield proc
    proc.kill()


@pytest.fixture
def workers(redis_url: str, namespace: str, tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start worker processes for the test's namespace; all are killed afterwards."""
    started: list[Proc] = []

    def start(**kwargs: object) -> Proc:
        log = tmp_path / f"worker-{len(started)}.log"
        proc = start_worker(redis_url, namespace, log, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


@dataclass
class Server:
    url: str
    release: str

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", **(headers or {})}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


def serving(url: str) -> bool:
    """Whether a taskorch server answers on `url`."""
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def install_without_workloads(
    cluster: Cluster, namespace: str, redis_url: str, *values: str
) -> str:
    """Install the chart for its RBAC and config only: no operator or worker pods (the tests
    run those as local processes), the test's Redis; `values` are more `--set`s. Returns the
    release's name."""
    release = f"taskorch-{namespace[-6:]}"  # cluster-scoped RBAC names must not collide
    sets = ["operator.replicas=0", "worker.enabled=false", "redis.mode=external"]
    sets += [f"redis.external.url={redis_url}", *values]
    cluster.helm(
        "install",
        release,
        CHART,
        "--namespace",
        namespace,
        *(a for v in sets for a in ("--set", v)),
    )
    return release


@pytest.fixture
def server(cluster: Cluster, namespace: str, redis_url: str, tmp_path: Path) -> Iterator[Server]:
    release = install_without_workloads(cluster, namespace, redis_url, "server.enabled=true")
    kubeconfig = cluster.serviceaccount_kubeconfig(
        namespace, f"{release}-server", tmp_path / "server.kubeconfig"
    )
    port = free_port()
    proc = Proc(
        ["server", "--host", "127.0.0.1", "--port", str(port)],
        # charts sampled twice a second, so a test sees them fill
        base_env(redis_url, kubeconfig, {"TASKORCH_SERVER_HISTORY_SECONDS": "0.5"}),
        tmp_path / "server.log",
    ).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: serving(url), timeout=30, what=f"taskorch server: {proc.logs()}")
        yield Server(url, release)
    finally:
        proc.kill()
        cluster.helm("uninstall", release, "--namespace", namespace, check=False)


def caller_token(
    cluster: Cluster,
    namespace: str,
    name: str,
    verbs: list[str],
    resources: tuple[str, ...] = ("tasks",),
) -> str:
    """A ServiceAccount allowed `verbs` on `resources` in `namespace` by a Role, and its token."""
    manifests = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name},
            "rules": [{"apiGroups": ["taskorch.io"], "resources": list(resources), "verbs": verbs}],
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
