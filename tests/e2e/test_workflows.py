"""Workflow end to end: kubectl apply → operator → step tasks in Redis → workers → status."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import redis
import yaml

from taskorch.queue import keys
from taskorch.queue.broker import Broker
from taskorch.queue.model import TaskRef
from tests.e2e.conftest import Cluster
from tests.e2e.processes import Proc, start_operator
from tests.e2e.test_tasks import wait_object
from tests.support import REPO, wait_for


def apply_workflow(cluster: Cluster, namespace: str, name: str, spec: dict[str, Any]) -> None:
    doc = {
        "apiVersion": "taskorch.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": spec,
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), namespace=namespace)


def workflow(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(cluster.get_json(f"workflow/{name}", namespace=namespace))


def wait_workflow(
    cluster: Cluster, namespace: str, name: str, phase: str, timeout: float = 60
) -> dict[str, Any]:
    def reached(w: dict[str, Any]) -> bool:
        return bool(w.get("status", {}).get("phase") == phase)

    return wait_object(
        cluster, namespace, f"workflow/{name}", reached, f"to reach {phase}", timeout
    )


def a_step_running(w: dict[str, Any]) -> bool:
    return any(s["phase"] == "Running" for s in w.get("status", {}).get("steps", []))


def step_records(redis_url: str, namespace: str, uid: str, steps: list[str]) -> dict[str, Any]:
    async def get() -> dict[str, Any]:
        b = Broker.from_url(redis_url)
        try:
            return {s: await b.get(namespace, "default", f"{uid}.{s}") for s in steps}
        finally:
            await b.close()

    return asyncio.run(get())


def test_the_seed_pipeline_runs_in_order_and_passes_results(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    workers()
    example = str(REPO / "examples" / "workflow.yaml")
    cluster.kubectl("apply", "-f", example, namespace=namespace)
    cluster.kubectl(
        "wait",
        "--for=condition=Succeeded",
        "workflow/image-processing-pipeline",
        "--timeout=60s",
        namespace=namespace,
    )
    w = workflow(cluster, namespace, "image-processing-pipeline")
    status = w["status"]
    assert (status["phase"], status["progress"]) == ("Succeeded", "3/3")
    assert [(s["name"], s["phase"]) for s in status["steps"]] == [
        ("download", "Succeeded"),
        ("resize", "Succeeded"),
        ("upload", "Succeeded"),
    ]
    records = step_records(
        redis_url, namespace, w["metadata"]["uid"], ["download", "resize", "upload"]
    )
    download, resize, upload = records["download"], records["resize"], records["upload"]
    assert resize.started_ms >= download.finished_ms and upload.started_ms >= resize.finished_ms
    assert resize.payload == {"path": download.result["path"], "width": 256}  # type kept
    assert upload.payload == {"path": resize.result["path"]}
    assert status["result"] == {"upload": upload.result}
    table = cluster.kubectl("get", "workflows", namespace=namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "PROGRESS", "AGE", "DURATION", "REASON"]
    assert table[1].split()[:3] == ["image-processing-pipeline", "Succeeded", "3/3"]
    assert (
        "image-processing-pipeline"
        in cluster.kubectl("get", "taskorch", namespace=namespace).stdout
    )


def test_bad_graphs_are_refused_at_apply_or_with_invalid_spec(
    cluster: Cluster, namespace: str, operator: Proc
) -> None:
    def refused(spec: dict[str, Any]) -> str:
        doc = {
            "apiVersion": "taskorch.io/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "bad"},
            "spec": spec,
        }
        proc = cluster.kubectl(
            "apply", "-f", "-", input=yaml.safe_dump(doc), namespace=namespace, check=False
        )
        assert proc.returncode != 0, f"{spec} should be refused"
        return proc.stderr

    t = {"type": "noop"}
    assert "spec.steps[1]: Duplicate value" in refused(
        {"steps": [{"name": "a", **t}, {"name": "a", **t}]}
    )
    err = refused({"steps": [{"name": "a", "dependsOn": ["a"], **t}]})
    assert "spec.steps[0].dependsOn" in err and "cannot depend on itself" in err
    apply_workflow(
        cluster, namespace, "ghost", {"steps": [{"name": "a", "dependsOn": ["ghost"], **t}]}
    )
    apply_workflow(
        cluster,
        namespace,
        "loop",
        {
            "steps": [
                {"name": "a", "dependsOn": ["c"], **t},
                {"name": "b", "dependsOn": ["a"], **t},
                {"name": "c", "dependsOn": ["b"], **t},
            ]
        },
    )
    ghost = wait_workflow(cluster, namespace, "ghost", "Failed")
    cond = ghost["status"]["conditions"][0]
    assert (cond["reason"], "'ghost'" in cond["message"]) == ("InvalidSpec", True)
    loop = wait_workflow(cluster, namespace, "loop", "Failed")
    assert "dependency cycle: a → c → b → a" in loop["status"]["conditions"][0]["message"]


def items_of(redis_url: str, namespace: str, uid: str, step: str, n: int) -> list[Any]:
    async def get() -> list[Any]:
        b = Broker.from_url(redis_url)
        try:
            return await b.get_many(
                [TaskRef(namespace, "default", f"{uid}.{step}.{i}") for i in range(n)]
            )
        finally:
            await b.close()

    return asyncio.run(get())


def max_overlap(spans: list[tuple[int, int]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    return peak


def test_fan_out_respects_parallelism_and_fan_in_gets_every_result_in_order(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    workers(concurrency=16)
    apply_workflow(
        cluster,
        namespace,
        "fan",
        {
            "parallelism": 10,
            "steps": [
                {"name": "numbers", "type": "noop"},
                {
                    "name": "square",
                    "type": "square",
                    "dependsOn": ["numbers"],
                    "forEach": list(range(100)),
                    "payload": {"value": "{{ item }}"},
                },
                {
                    "name": "total",
                    "type": "total",
                    "dependsOn": ["square"],
                    "payload": {"values": "{{ steps.square.result }}"},
                },
            ],
        },
    )
    w = wait_workflow(cluster, namespace, "fan", "Succeeded", timeout=120)
    squares = items_of(redis_url, namespace, w["metadata"]["uid"], "square", 100)
    assert [t.result for t in squares] == [i * i for i in range(100)]
    assert max_overlap([(t.started_ms, t.finished_ms) for t in squares]) <= 10
    assert w["status"]["result"] == {"total": {"count": 100, "sum": 328350, "first": 0}}
    fan_out = next(s for s in w["status"]["steps"] if s["name"] == "square")
    assert (fan_out["items"], fan_out["counts"]) == (100, {"Succeeded": 100})


def test_sequential_group_never_overlaps(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    workers(concurrency=8)
    names = [f"s{i}" for i in range(5)]
    apply_workflow(
        cluster,
        namespace,
        "seq",
        {
            "parallelism": 1,
            "steps": [{"name": n, "type": "slow", "payload": {"seconds": 0.5}} for n in names],
        },
    )
    w = wait_workflow(cluster, namespace, "seq", "Succeeded", timeout=60)
    records = step_records(redis_url, namespace, w["metadata"]["uid"], names)
    spans = sorted((r.started_ms, r.finished_ms) for r in records.values())
    assert max_overlap(spans) == 1
    assert [records[n].started_ms for n in names] == sorted(records[n].started_ms for n in names)


def test_when_false_skips_and_fail_fast_still_runs_finally(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc]
) -> None:
    workers()
    apply_workflow(
        cluster,
        namespace,
        "branches",
        {
            "steps": [
                {"name": "check", "type": "verdict", "payload": {"ok": False}},
                {
                    "name": "publish",
                    "type": "noop",
                    "dependsOn": ["check"],
                    "when": "steps.check.result.ok",
                },
                {"name": "announce", "type": "noop", "dependsOn": ["publish"]},
                {
                    "name": "report",
                    "type": "noop",
                    "dependsOn": ["check"],
                    "when": "!steps.check.result.ok",
                },
            ]
        },
    )
    w = wait_workflow(cluster, namespace, "branches", "Succeeded")
    phases = {s["name"]: (s["phase"], s.get("reason")) for s in w["status"]["steps"]}
    assert phases == {
        "check": ("Succeeded", "Succeeded"),
        "publish": ("Skipped", "ConditionFalse"),
        "announce": ("Skipped", "UpstreamSkipped"),
        "report": ("Succeeded", "Succeeded"),
    }
    apply_workflow(
        cluster,
        namespace,
        "fails",
        {
            "steps": [
                {
                    "name": "doomed",
                    "type": "always_fail",
                    "retry": {"maxAttempts": 2, "initialDelay": "100ms"},
                },
                {"name": "after", "type": "noop", "dependsOn": ["doomed"]},
            ],
            "finally": [{"name": "cleanup", "type": "noop"}],
        },
    )
    w = wait_workflow(cluster, namespace, "fails", "Failed")
    steps = {s["name"]: s for s in w["status"]["steps"]}
    assert steps["doomed"]["phase"] == "Failed" and steps["doomed"]["attempts"] == 2
    assert "this handler always fails" in steps["doomed"]["message"]
    assert (steps["after"]["phase"], steps["after"]["reason"]) == ("Skipped", "UpstreamFailed")
    assert steps["cleanup"]["phase"] == "Succeeded"
    cond = w["status"]["conditions"][0]
    assert (cond["status"], cond["reason"]) == ("False", "StepFailed")
    assert "step doomed failed" in cond["message"]


def test_a_missing_reference_fails_the_step_naming_it(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc]
) -> None:
    workers()
    apply_workflow(
        cluster,
        namespace,
        "typo",
        {
            "steps": [
                {
                    "name": "download",
                    "type": "download_image",
                    "payload": {"image_url": "u/cat.jpg"},
                },
                {
                    "name": "resize",
                    "type": "resize_image",
                    "dependsOn": ["download"],
                    "payload": {"path": "{{ steps.download.result.pth }}"},
                },
            ]
        },
    )
    w = wait_workflow(cluster, namespace, "typo", "Failed")
    resize = next(s for s in w["status"]["steps"] if s["name"] == "resize")
    assert resize["reason"] == "InvalidReference"
    assert "steps.download.result.pth" in resize["message"] and "no .pth" in resize["message"]


def test_deleting_a_running_workflow_cancels_its_steps(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    workers(TASKORCH_LEASE_SECONDS="1.5")
    apply_workflow(
        cluster,
        namespace,
        "long",
        {"steps": [{"name": "wait", "type": "slow", "payload": {"seconds": 60}}]},
    )

    w = wait_object(cluster, namespace, "workflow/long", a_step_running, "to run its step")
    cluster.kubectl("delete", "workflow", "long", "--wait=true", namespace=namespace)
    uid = w["metadata"]["uid"]
    wait_for(
        lambda: (
            (r := step_records(redis_url, namespace, uid, ["wait"])["wait"]) is not None
            and r.state.value == "cancelled"
        ),
        timeout=30,
        what="the step to be cancelled",
    )


def test_operator_restart_mid_workflow_runs_no_step_twice(
    cluster: Cluster, namespace: str, redis_url: str, tmp_path: Any, workers: Callable[..., Proc]
) -> None:
    op = start_operator(redis_url, cluster.kubeconfig, tmp_path / "op1.log")
    workers()
    names = [f"s{i}" for i in range(6)]
    spec = {
        "steps": [
            {"name": n, "type": "count", **({"dependsOn": [names[i - 1]]} if i else {})}
            for i, n in enumerate(names)
        ]
    }
    apply_workflow(cluster, namespace, "chain", spec)
    wait_for(
        lambda: (
            (workflow(cluster, namespace, "chain").get("status", {}).get("progress") or "0/").split(
                "/"
            )[0]
            >= "2"
        ),
        what="two steps done",
    )
    op.kill()
    op = start_operator(redis_url, cluster.kubeconfig, tmp_path / "op2.log")
    try:
        w = wait_workflow(cluster, namespace, "chain", "Succeeded")
    finally:
        op.kill()
    r = redis.Redis.from_url(redis_url)
    assert [r.get(f"runs:{w['metadata']['uid']}.{n}") for n in names] == [b"1"] * 6


def test_retry_from_failure_reruns_only_what_failed_and_the_cli_draws_the_tree(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    workers()
    apply_workflow(
        cluster,
        namespace,
        "retryable",
        {
            "steps": [
                {"name": "first", "type": "count"},
                {
                    "name": "flaky",
                    "type": "fail_until_flag",
                    "dependsOn": ["first"],
                    "retry": {"maxAttempts": 1},
                },
                {"name": "last", "type": "count", "dependsOn": ["flaky"]},
            ],
            "finally": [{"name": "notify", "type": "count"}],
        },
    )
    failed = wait_workflow(cluster, namespace, "retryable", "Failed")
    uid = failed["metadata"]["uid"]
    redis.Redis.from_url(redis_url).set(f"flag:{uid}.flaky", 1)

    def cli(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "taskorch.cli", "workflow", *args, "-n", namespace],
            capture_output=True,
            text=True,
            check=True,
            env=cluster.env,
        ).stdout

    assert "retry requested" in cli("retry", "retryable")
    done = wait_workflow(cluster, namespace, "retryable", "Succeeded")
    r = redis.Redis.from_url(redis_url)
    runs = {s: r.get(f"runs:{uid}.{s}") for s in ("first", "last", "notify")}
    assert runs == {"first": b"1", "last": b"1", "notify": b"2"}  # finally ran again, first not
    assert done["status"]["progress"] == "4/4"
    tree = cli("get", "retryable")
    assert tree.splitlines()[0].startswith("retryable  Succeeded  4/4")
    assert "└─ first  Succeeded" in tree and "      └─ last  Succeeded" in tree
    assert "finally:" in tree and "notify  Succeeded" in tree


def test_continue_suspend_deadline_and_ttl(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    workers(TASKORCH_LEASE_SECONDS="1.5")
    fails = {"type": "always_fail", "retry": {"maxAttempts": 1}}
    apply_workflow(
        cluster,
        namespace,
        "branches",
        {
            "onFailure": "continue",
            "ttlSecondsAfterFinished": 3,
            "steps": [
                {"name": "bad", **fails},
                {"name": "after_bad", "type": "noop", "dependsOn": ["bad"]},
                {"name": "good", "type": "noop"},
                {"name": "after_good", "type": "noop", "dependsOn": ["good"]},
            ],
        },
    )
    w = wait_workflow(cluster, namespace, "branches", "Failed")
    phases = {s["name"]: s["phase"] for s in w["status"]["steps"]}
    assert phases == {
        "bad": "Failed",
        "after_bad": "Skipped",
        "good": "Succeeded",
        "after_good": "Succeeded",  # an independent branch ran to the end
    }
    wait_for(
        lambda: (
            cluster.kubectl(
                "get", "workflow", "branches", namespace=namespace, check=False
            ).returncode
        ),
        what="the TTL to delete the ended workflow",
    )

    chain = [
        {"name": f"s{i}", "type": "count", **({"dependsOn": [f"s{i - 1}"]} if i else {})}
        for i in range(3)
    ]
    apply_workflow(cluster, namespace, "held", {"suspend": True, "steps": chain})
    held = wait_workflow(cluster, namespace, "held", "Suspended")
    assert step_records(redis_url, namespace, held["metadata"]["uid"], ["s0"])["s0"] is None
    cluster.kubectl(
        "patch",
        "workflow",
        "held",
        "--type=merge",
        "-p",
        '{"spec":{"suspend":false}}',
        namespace=namespace,
    )
    wait_workflow(cluster, namespace, "held", "Succeeded")

    slow = {"type": "slow", "payload": {"seconds": 60}}
    apply_workflow(
        cluster,
        namespace,
        "late",
        {
            "deadline": "3s",
            "steps": [
                {"name": "long", **slow},
                {"name": "next", "type": "noop", "dependsOn": ["long"]},
            ],
            "finally": [{"name": "f", "type": "noop"}],
        },
    )
    late = wait_workflow(cluster, namespace, "late", "Failed", timeout=30)
    cond = late["status"]["conditions"][0]
    assert (cond["reason"], "deadline (3s) passed" in cond["message"]) == ("DeadlineExceeded", True)
    steps = {s["name"]: (s["phase"], s["reason"]) for s in late["status"]["steps"]}
    assert steps["long"] == ("Cancelled", "Cancelled") and steps["next"][0] == "Skipped"
    assert steps["f"][0] != "Succeeded"  # finally does not run past the deadline


def test_an_ended_workflow_whose_step_records_expired_never_runs_again(
    cluster: Cluster, namespace: str, redis_url: str, tmp_path: Any, workers: Callable[..., Proc]
) -> None:
    op = start_operator(redis_url, cluster.kubeconfig, tmp_path / "op1.log")
    workers()
    apply_workflow(cluster, namespace, "once", {"steps": [{"name": "s0", "type": "count"}]})
    uid = wait_workflow(cluster, namespace, "once", "Succeeded")["metadata"]["uid"]
    op.kill()
    # The step's record expires with the result retention (24 h by default).
    redis.Redis.from_url(redis_url).delete(keys.task(namespace, "default", f"{uid}.s0"))
    op = start_operator(redis_url, cluster.kubeconfig, tmp_path / "op2.log")
    try:
        # The restarted operator lists the old workflow before it sees this new one.
        apply_workflow(cluster, namespace, "probe", {"steps": [{"name": "p", "type": "noop"}]})
        wait_workflow(cluster, namespace, "probe", "Succeeded")
    finally:
        op.kill()
    assert step_records(redis_url, namespace, uid, ["s0"])["s0"] is None, "s0 was enqueued again"
    assert redis.Redis.from_url(redis_url).get(f"runs:{uid}.s0") == b"1"
    assert workflow(cluster, namespace, "once")["status"]["phase"] == "Succeeded"


def test_a_step_concurrency_key_serializes_its_items(
    cluster: Cluster, namespace: str, operator: Proc, workers: Callable[..., Proc], redis_url: str
) -> None:
    workers(concurrency=8)
    apply_workflow(
        cluster,
        namespace,
        "keyed",
        {
            "steps": [
                {
                    "name": "each",
                    "type": "slow",
                    "forEach": [1, 2, 3, 4],
                    "payload": {"seconds": 0.3},
                    "concurrencyKey": "one-printer",
                }
            ]
        },
    )
    w = wait_workflow(cluster, namespace, "keyed", "Succeeded")
    items = items_of(redis_url, namespace, w["metadata"]["uid"], "each", 4)
    assert max_overlap([(t.started_ms, t.finished_ms) for t in items]) == 1
    assert [t.started_ms for t in items] == sorted(t.started_ms for t in items)
