"""Two operator replicas, one leading through a Lease and one hot standby, on the real control
plane: the standby acts on nothing while the leader lives, and takes over when the leader is
killed (kill -9: after the lease expires) or stops cleanly (it releases the Lease)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import Cluster
from tests.e2e.processes import Proc, start_operator
from tests.support import free_port, wait_for

pytestmark = pytest.mark.e2e
LEASE_SECONDS = 15  # the chart's default, so the figures below are what users get
LEASE = "taskorch-operator"


def task(name: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "taskorch.io/v1alpha1",
            "kind": "Task",
            "metadata": {"name": name},
            "spec": {"type": "noop"},
        }
    )


def is_leader(metrics_port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        body = r.read().decode()
    line = next(x for x in body.splitlines() if x.startswith("taskorch_operator_leader "))
    return float(line.split()[1]) == 1.0


@pytest.fixture
def replicas(
    cluster: Cluster, redis_url: str, namespace: str, tmp_path: Path
) -> Iterator[Callable[[str], tuple[Proc, int]]]:
    started: list[Proc] = []

    def start(pod: str) -> tuple[Proc, int]:
        port = free_port()
        proc = start_operator(
            redis_url,
            cluster.kubeconfig,
            tmp_path / f"{pod}.log",
            "--namespace",
            namespace,
            "--metrics-port",
            str(port),
            POD_NAME=pod,
            TASKORCH_LEADER_ELECTION="true",
            TASKORCH_LEADER_ELECTION_NAMESPACE=namespace,
            TASKORCH_LEADER_LEASE_SECONDS=str(LEASE_SECONDS),
        )
        started.append(proc)
        return proc, port

    yield start
    for proc in started:
        proc.kill()


def test_standby_takes_over_on_kill_and_on_clean_stop(
    cluster: Cluster,
    namespace: str,
    replicas: Callable[[str], tuple[Proc, int]],
    workers: Callable[..., Proc],
    record_property: Callable[[str, object], None],
) -> None:
    def holder() -> str:
        lease = cluster.get_json(f"lease/{LEASE}", namespace=namespace)
        return str(lease["spec"].get("holderIdentity") or "")

    def status_written(name: str) -> bool:
        found = cluster.get_json(f"task/{name}", namespace=namespace)
        return bool(found.get("status", {}).get("phase"))

    def succeeded(name: str) -> None:
        cluster.kubectl(
            "wait",
            "--for=condition=Succeeded",
            f"task/{name}",
            "--timeout=60s",
            namespace=namespace,
        )

    a, a_port = replicas("op-a")
    wait_for(lambda: holder().startswith("op-a_"), timeout=30, what="op-a leading")
    b, b_port = replicas("op-b")  # healthy (start_operator waited for its liveness) but standby
    workers()
    cluster.kubectl("apply", "-f", "-", input=task("first"), namespace=namespace)
    succeeded("first")
    assert is_leader(a_port) and not is_leader(b_port)
    assert holder().startswith("op-a_")
    # The standby acted on nothing: the first Task's status came from op-a only.
    assert "taking the Lease over" not in b.logs()

    def seconds_until_a_status(name: str, what: str) -> float:
        """Apply a Task now; how long until some replica wrote its status."""
        since = time.monotonic()
        cluster.kubectl("apply", "-f", "-", input=task(name), namespace=namespace)
        wait_for(lambda: status_written(name), timeout=LEASE_SECONDS * 4, what=what)
        elapsed = time.monotonic() - since
        succeeded(name)
        return elapsed

    a.kill()  # kill -9: no release, so op-b waits out the lease
    after_kill = seconds_until_a_status("after-kill", "op-b acting")
    assert holder().startswith("op-b_") and is_leader(b_port)
    lease = cluster.get_json(f"lease/{LEASE}", namespace=namespace)
    assert lease["spec"]["leaseTransitions"] == 1

    _, c_port = replicas("op-c")
    b.stop()  # SIGTERM: kopf stops, the loops end, the Lease is released
    assert b.process is not None and b.process.returncode == 0, b.logs()
    after_stop = seconds_until_a_status("after-stop", "op-c acting")
    assert holder().startswith("op-c_") and is_leader(c_port)
    assert "released the Lease" in b.logs()

    figures = {
        "takeover_after_kill_s": round(after_kill, 2),
        "after_clean_stop_s": round(after_stop, 2),
    }
    for key, value in figures.items():
        record_property(key, value)
    print(json.dumps(figures))
