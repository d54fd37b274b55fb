"""E2E fixtures: one real control plane per session (kwokctl), a namespace per test."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.e2e.processes import Proc, start_operator, start_worker
from tests.support import REPO, TOOLS, env_with_tools

# Overridable so that two people can run e2e tests on one machine, each on a control plane.
CLUSTER = os.environ.get("TASKORCH_TEST_CLUSTER", "taskorch-test")


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
