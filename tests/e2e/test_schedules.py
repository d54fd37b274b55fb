"""Schedule end to end on a real API server: ticks → child Tasks, exactly once per tick across an
operator kill -9, concurrency policies, suspend/resume, bad input. Seconds schedules (6 fields)
keep it fast; the decisions are the same code as for minutes (tests/unit/test_cron.py)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import Cluster
from tests.e2e.processes import Proc, base_env, start_operator
from tests.support import wait_for


def apply_schedule(cluster: Cluster, namespace: str, name: str, spec: dict[str, Any]) -> None:
    doc = {
        "apiVersion": "taskorch.io/v1alpha1",
        "kind": "Schedule",
        "metadata": {"name": name},
        "spec": spec,
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), namespace=namespace)


def children(cluster: Cluster, namespace: str, schedule: str) -> list[dict[str, Any]]:
    got = cluster.get_json("tasks", "-l", f"taskorch.io/schedule={schedule}", namespace=namespace)
    return sorted(got["items"], key=lambda c: c["metadata"]["name"])


def ticks(items: list[dict[str, Any]]) -> list[int]:
    """Each child's tick (unix seconds, from its name)."""
    return sorted(int(c["metadata"]["name"].rsplit("-", 1)[1]) for c in items)


def schedule_status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(cluster.get_json(f"schedule/{name}", namespace=namespace).get("status") or {})


def every(seconds: int) -> str:
    return f"*/{seconds} * * * * *"


def test_one_child_per_tick_across_an_operator_kill(
    cluster: Cluster, namespace: str, redis_url: str, tmp_path: Path, workers: Callable[..., Proc]
) -> None:
    workers()
    operator = start_operator(redis_url, cluster.kubeconfig, tmp_path / "operator-1.log")
    try:
        apply_schedule(
            cluster,
            namespace,
            "tick",
            {
                "schedule": every(2),
                "successfulHistoryLimit": 100,
                "taskTemplate": {"spec": {"type": "count"}},
            },
        )
        wait_for(lambda: len(children(cluster, namespace, "tick")) >= 3, timeout=30, what="3 ticks")
    finally:
        operator.kill()  # SIGKILL: no cleanup
    killed = time.time()
    before = ticks(children(cluster, namespace, "tick"))
    # down for several ticks
    wait_for(lambda: time.time() - killed > 5, timeout=10, interval=0.2, what="downtime")
    restarted = time.time()
    operator = start_operator(redis_url, cluster.kubeconfig, tmp_path / "operator-2.log")
    try:
        wait_for(
            lambda: (
                len([t for t in ticks(children(cluster, namespace, "tick")) if t > restarted]) >= 3
            ),
            timeout=30,
            what="3 ticks after the restart",
        )
        fired = ticks(children(cluster, namespace, "tick"))
        # before the kill and after the restart: every tick, once (no gaps, no repeats)
        assert all(b - a == 2 for a, b in itertools.pairwise(before)), before
        after = [t for t in fired if t > restarted]
        assert all(b - a == 2 for a, b in itertools.pairwise(after)), after
        # the downtime's missed ticks: the latest of them once (RunLatest), never a burst
        missed = [t for t in fired if before[-1] < t <= restarted]
        assert len(missed) <= 1, (missed, fired)
        # each child ran once
        apply_schedule(
            cluster,
            namespace,
            "tick",
            {
                "schedule": every(2),
                "suspend": True,
                "successfulHistoryLimit": 100,
                "taskTemplate": {"spec": {"type": "count"}},
            },
        )

        def all_succeeded() -> list[dict[str, Any]] | None:
            items = children(cluster, namespace, "tick")
            phases = {(c.get("status") or {}).get("phase") for c in items}
            return items if phases == {"Succeeded"} else None

        items = wait_for(all_succeeded, timeout=30, what="every child to succeed")
        assert {c["status"]["result"] for c in items} == {1}
        assert schedule_status(cluster, namespace, "tick")["lastScheduleTime"]
    finally:
        operator.kill()


def test_forbid_skips_a_tick_while_the_previous_child_runs(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc]
) -> None:
    workers()
    apply_schedule(
        cluster,
        namespace,
        "forbid",
        {
            "schedule": every(2),
            "concurrencyPolicy": "Forbid",
            "successfulHistoryLimit": 100,
            "taskTemplate": {"spec": {"type": "slow", "payload": {"seconds": 5}}},
        },
    )
    wait_for(
        lambda: len(children(cluster, namespace, "forbid")) >= 2, timeout=40, what="two children"
    )
    first, second = children(cluster, namespace, "forbid")[:2]
    # the second was created only after the first finished
    done = datetime.fromisoformat(first["status"]["completionTime"].replace("Z", "+00:00"))
    created = datetime.fromisoformat(second["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    assert created >= done.replace(microsecond=0), (first["status"], second["metadata"])
    status = schedule_status(cluster, namespace, "forbid")
    assert status["skipped"] >= 1 and "Forbid" in status["lastSkip"], status


def test_replace_cancels_the_running_child(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc]
) -> None:
    workers()
    apply_schedule(
        cluster,
        namespace,
        "replace",
        {
            "schedule": every(3),
            "concurrencyPolicy": "Replace",
            "successfulHistoryLimit": 100,
            "failedHistoryLimit": 100,
            "taskTemplate": {"spec": {"type": "slow", "payload": {"seconds": 60}}},
        },
    )

    def replaced() -> bool:
        items = children(cluster, namespace, "replace")
        return len(items) >= 2 and (items[0].get("status") or {}).get("phase") == "Cancelled"

    wait_for(replaced, timeout=40, what="the first child to be replaced")
    # Replace asks the running child to cancel (spec.cancel) when it starts the next one; the
    # cancelled child's status may lag a moment, so count the children still meant to run.
    items = children(cluster, namespace, "replace")
    meant_to_run = [
        c["metadata"]["name"]
        for c in items
        if (c.get("status") or {}).get("phase") in ("Running", "Queued", "Pending")
        and not c["spec"].get("cancel")
    ]
    assert len(meant_to_run) <= 1, [(c["spec"], c.get("status")) for c in items]


def test_suspend_fires_nothing_and_resume_no_burst(
    cluster: Cluster, namespace: str, operator: Proc
) -> None:
    template = {"taskTemplate": {"spec": {"type": "count"}}, "successfulHistoryLimit": 100}
    apply_schedule(
        cluster, namespace, "paused", {"schedule": every(1), "suspend": True, **template}
    )
    wait_for(
        lambda: any(
            c["type"] == "Ready"
            for c in schedule_status(cluster, namespace, "paused").get("conditions", [])
        ),
        timeout=20,
        what="the operator to see the Schedule",
    )
    # several ticks pass while suspended (an observation window, not a synchronisation)
    time.sleep(4)
    assert children(cluster, namespace, "paused") == []
    assert "nextScheduleTime" not in schedule_status(cluster, namespace, "paused")
    resumed = time.time()
    apply_schedule(
        cluster, namespace, "paused", {"schedule": every(1), "suspend": False, **template}
    )
    wait_for(lambda: children(cluster, namespace, "paused"), timeout=20, what="a tick after resume")
    # the ticks missed while suspended: at most the latest of them (RunLatest)
    missed = [t for t in ticks(children(cluster, namespace, "paused")) if t <= resumed]
    assert len(missed) <= 1, missed


def test_a_time_zone_shifts_the_next_schedule_time(
    cluster: Cluster, namespace: str, operator: Proc
) -> None:
    apply_schedule(
        cluster,
        namespace,
        "tokyo",
        {
            "schedule": "0 9 * * *",
            "timeZone": "Asia/Tokyo",
            "taskTemplate": {"spec": {"type": "count"}},
        },
    )
    nxt = wait_for(
        lambda: schedule_status(cluster, namespace, "tokyo").get("nextScheduleTime"),
        timeout=20,
        what="the next schedule time",
    )
    assert nxt.endswith("T00:00:00Z"), nxt  # 09:00 in Tokyo (UTC+9, no DST)
    table = cluster.kubectl("get", "schedules", namespace=namespace).stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "SCHEDULE",
        "TIMEZONE",
        "SUSPEND",
        "ACTIVE",
        "LAST-SCHEDULE",
        "NEXT",
        "AGE",
    ], table


def test_bad_input_is_refused_at_apply_or_named_by_the_operator(
    cluster: Cluster, namespace: str, operator: Proc
) -> None:
    task = {"spec": {"type": "count"}}
    for spec, words in (
        (
            {"schedule": "* * * * *", "timeZone": "Mars/Olympus", "taskTemplate": task},
            "spec.timeZone",
        ),
        ({"schedule": "* * * * *"}, "exactly one of taskTemplate and workflowTemplate"),
        (
            {
                "schedule": "* * * * *",
                "taskTemplate": task,
                "workflowTemplate": {"spec": {"steps": [{"name": "a", "type": "count"}]}},
            },
            "exactly one of taskTemplate and workflowTemplate",
        ),
    ):
        doc = {
            "apiVersion": "taskorch.io/v1alpha1",
            "kind": "Schedule",
            "metadata": {"name": "bad"},
            "spec": spec,
        }
        out = cluster.kubectl(
            "apply", "-f", "-", input=yaml.safe_dump(doc), namespace=namespace, check=False
        )
        assert out.returncode != 0 and words in out.stderr, (spec, out.stderr)
    # a cron expression CEL cannot parse: the operator's condition carries the parser's message
    apply_schedule(cluster, namespace, "bad-cron", {"schedule": "61 * * * *", "taskTemplate": task})

    def invalid() -> dict[str, Any] | None:
        conds = schedule_status(cluster, namespace, "bad-cron").get("conditions", [])
        return next((c for c in conds if c["reason"] == "InvalidSpec"), None)

    cond = wait_for(invalid, timeout=20, what="InvalidSpec")
    assert cond["status"] == "False" and "61 * * * *" in cond["message"], cond


def test_trigger_runs_one_now(
    cluster: Cluster, namespace: str, redis_url: str, operator: Proc, workers: Callable[..., Proc]
) -> None:
    workers()
    apply_schedule(
        cluster,
        namespace,
        "manual",
        {"schedule": "@yearly", "taskTemplate": {"spec": {"type": "count"}}},
    )
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "taskorch"),
            "schedule",
            "trigger",
            "-n",
            namespace,
            "manual",
        ],
        capture_output=True,
        text=True,
        env=base_env(redis_url, cluster.kubeconfig),
        check=True,
    ).stdout
    assert out.startswith("task/manual-manual-"), out
    name = out.split("/", 1)[1].split()[0]
    wait_for(
        lambda: (
            (cluster.get_json(f"task/{name}", namespace=namespace).get("status") or {}).get("phase")
            == "Succeeded"
        ),
        timeout=30,
        what="the triggered task to succeed",
    )
    assert len(children(cluster, namespace, "manual")) == 1
