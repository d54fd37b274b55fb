"""Chaos: a few hundred Task CRs while workers are kill -9'd and replaced every few seconds, the
operator is killed and restarted and Redis is restarted. Every Task must end Succeeded, none
lost, and no handler may run more often than the process deaths can explain."""

from __future__ import annotations

import collections
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from taskorch.queue import keys
from tests.e2e.conftest import Cluster
from tests.e2e.processes import Proc, start_operator, start_worker
from tests.e2e.test_tasks import task_docs
from tests.support import RedisServer, wait_for

TASKS = 300
WORKERS = 3
CONCURRENCY = 3
KILL_EVERY_SECONDS = 2.5
MAX_KILLS = 8
DEADLINE_SECONDS = 300


@pytest.mark.slow
def test_chaos_every_task_succeeds_none_lost_and_reruns_bounded_by_deaths(
    cluster: Cluster,
    namespace: str,
    redis_server: RedisServer,
    redis_url: str,
    tmp_path: Path,
) -> None:
    runs_file = tmp_path / "runs.txt"
    runs_file.touch()
    worker_env = {
        # short leases: a killed worker's tasks come back within seconds
        "TASKORCH_LEASE_SECONDS": "3",
        "CHAOS_RUNS_FILE": str(runs_file),
    }
    logs = iter(tmp_path / f"proc-{i}.log" for i in range(1000))

    def new_worker() -> Proc:
        return start_worker(redis_url, namespace, next(logs), concurrency=CONCURRENCY, **worker_env)

    def new_operator() -> Proc:
        resync = {"TASKORCH_RESYNC_SECONDS": "5"}
        return start_operator(redis_url, cluster.kubeconfig, next(logs), **resync)

    rng = random.Random(7)
    operator = new_operator()
    workers = [new_worker() for _ in range(WORKERS)]
    docs = task_docs(
        [f"chaos-{i:03d}" for i in range(TASKS)], {"type": "chaos", "payload": {"seconds": 0.6}}
    )
    kills = exits = 0
    operator_restarted = redis_restarted = False
    items: list[dict[str, Any]] = []
    try:
        # a task may be on a killed worker several times in this much chaos: its queue's policy
        # allows more recoveries than the default
        queue = {
            "apiVersion": "taskorch.io/v1alpha1",
            "kind": "TaskQueue",
            "metadata": {"name": "default"},
            "spec": {"maxRecoveries": 10},
        }
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(queue), namespace=namespace)
        config = redis.Redis.from_url(redis_url)
        wait_for(
            lambda: config.hget(keys.config(namespace, "default"), "max_recoveries") == b"10",
            timeout=30,
            what="the queue's policy in Redis",
        )
        cluster.kubectl("apply", "-f", "-", input=docs, namespace=namespace)
        started = time.monotonic()
        next_kill = started + KILL_EVERY_SECONDS
        while True:
            items = cluster.get_json("tasks", namespace=namespace)["items"]
            phases = collections.Counter(t.get("status", {}).get("phase") for t in items)
            if phases["Succeeded"] == TASKS:
                break
            elapsed = time.monotonic() - started
            assert elapsed < DEADLINE_SECONDS, f"not all Succeeded after {elapsed:.0f}s: {phases}"
            # What Kubernetes would do: a worker that exited on its own is replaced.
            for w in [w for w in workers if w.process and w.process.poll() is not None]:
                exits += 1
                workers.remove(w)
                workers.append(new_worker())
            if time.monotonic() >= next_kill and kills < MAX_KILLS:
                victim = workers.pop(rng.randrange(len(workers)))
                victim.kill()
                kills += 1
                workers.append(new_worker())
                next_kill = time.monotonic() + KILL_EVERY_SECONDS
                if kills == 2 and not operator_restarted:
                    operator.kill()
                    operator = new_operator()
                    operator_restarted = True
                if kills == 4 and not redis_restarted:
                    redis_server.restart()
                    redis_restarted = True
            time.sleep(0.5)  # the pace of the chaos and of the status polling
        took = time.monotonic() - started
    finally:
        operator.kill()
        for w in workers:
            w.kill()

    uids = {t["metadata"]["uid"] for t in items}
    runs = collections.Counter(runs_file.read_text().split())
    deaths = kills + exits
    reruns = sum(n - 1 for n in runs.values())
    figures = {
        "tasks": TASKS,
        "worker_kills": kills,
        "worker_exits": exits,
        "operator_restarted": operator_restarted,
        "redis_restarted": redis_restarted,
        "lost": len(uids - set(runs)),
        "duplicate_runs": reruns,
        "max_runs_of_one_task": max(runs.values()),
        "seconds": round(took, 1),
    }
    print("chaos figures:", json.dumps(figures))
    (tmp_path / "chaos.json").write_text(json.dumps(figures))
    assert operator_restarted and redis_restarted and kills >= 4, figures
    assert set(runs) == uids, "a task ran that is not one of the Tasks, or one never ran"
    assert max(runs.values()) <= 1 + deaths, figures
    # A dying worker can only cost reruns of what it was running (at most CONCURRENCY) and of
    # what had finished but was not yet settled (settlement and the next claim are one round
    # trip per slot, so at most CONCURRENCY more).
    assert reruns <= deaths * 2 * CONCURRENCY, figures
