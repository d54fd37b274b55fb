"""What a Task costs the API server, counted by the API server itself (apiserver_request_total):
its create, and its status writes; no annotation patch of kopf's (controller/admission.py)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import pytest
import redis

from taskorch.queue import keys
from tests.e2e.conftest import Cluster
from tests.e2e.processes import Proc
from tests.e2e.test_tasks import task_docs
from tests.support import wait_for

pytestmark = pytest.mark.e2e
SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')


def task_requests(cluster: Cluster) -> Counter[tuple[str, str]]:
    """Requests on taskorch.io tasks so far, by (verb, subresource)."""
    counts: Counter[tuple[str, str]] = Counter()
    for line in cluster.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = dict(LABEL.findall(m["labels"]))
        if labels.get("group") == "taskorch.io" and labels.get("resource") == "tasks":
            counts[labels["verb"], labels.get("subresource", "")] += int(float(m["value"]))
    return counts


def test_a_task_costs_its_create_and_its_status_writes_only(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    workers(concurrency=16)
    # A worker still starting up (imports, a loaded machine) would leave the first Tasks Queued
    # for a status-writer window or more: a Queued write, then a Succeeded one. The figure is
    # what a Task costs once a worker is there.
    with redis.Redis.from_url(redis_url) as r:
        wait_for(lambda: r.zcard(keys.workers(namespace)) > 0, timeout=30, what="a worker")
    count = 60
    names = [f"w-{i}" for i in range(count)]
    before = task_requests(cluster)
    cluster.kubectl(
        "apply", "-f", "-", input=task_docs(names, {"type": "noop"}), namespace=namespace
    )

    def all_succeeded() -> bool:
        items = cluster.get_json("tasks", namespace=namespace)["items"]
        done = [t for t in items if (t.get("status") or {}).get("phase") == "Succeeded"]
        return len(done) == count

    wait_for(all_succeeded, timeout=120, what=f"{count} Tasks Succeeded")
    after = task_requests(cluster)
    writes = {k: after[k] - before[k] for k in after if k[0] in ("POST", "PATCH", "PUT")}
    writes = {k: v for k, v in writes.items() if v}
    assert writes.get(("POST", ""), 0) == count, writes
    # No write to the Task itself (kopf's annotations): only its status.
    assert writes.get(("PATCH", ""), 0) == 0 and writes.get(("PUT", ""), 0) == 0, writes
    status_writes = writes.get(("PATCH", "status"), 0) + writes.get(("PUT", "status"), 0)
    assert count <= status_writes <= count * 1.5, writes
    print(f"status writes per Task: {status_writes / count:.2f}", writes)
