"""Container tasks without servers: what a Job and its pod say about an attempt (by table), the
Job the operator creates, which Job a new claim waits on, and the handler's create/follow/cancel
against a fake API (the e2e tests run it on a real API server with kwok)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from taskorch.api.task import TaskSpec, runnable, task_queue
from taskorch.api.workflow import WorkflowStep
from taskorch.controller import job_outcome
from taskorch.controller.container_tasks import (
    ATTEMPT,
    JOB_NAME,
    TASK_KEY,
    ContainerPayload,
    ContainerTasks,
    Owner,
    adoptable,
    job_body,
    job_name,
    task_key,
    with_job,
)
from taskorch.controller.job_outcome import Running, Succeeded
from taskorch.errors import NonRetryable
from taskorch.worker.app import Context


def job(name: str = "j-1", *conditions: tuple[str, str], attempt: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {ATTEMPT: str(attempt)}},
        "status": {
            "conditions": [{"type": t, "status": "True", "reason": r} for t, r in conditions]
        },
    }


def pod(state: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    statuses = [{"name": "task", "state": state}] if state else []
    return {"metadata": {"name": "p"}, "status": {"containerStatuses": statuses, **status}}


def terminated(code: int, reason: str = "Error", message: str | None = None) -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "reason": reason, "message": message}}


@pytest.mark.parametrize(
    ("the_job", "pods", "expected"),
    [
        (job(), [pod({"running": {}})], Running()),
        (job("j-1", ("Complete", "")), [pod(terminated(0, "Completed"))], Succeeded),
        (job("j-1", ("Failed", "BackoffLimitExceeded")), [pod(terminated(3))], "ContainerFailed"),
        (
            job("j-1", ("Failed", "BackoffLimitExceeded")),
            [pod(terminated(137, "OOMKilled"))],
            "OOMKilled",
        ),
        (job("j-1", ("Failed", "DeadlineExceeded")), [], "DeadlineExceeded"),
        (job("j-1", ("Failed", "PodFailurePolicy")), [], "JobFailed"),
        (
            job("j-1", ("Failed", "BackoffLimitExceeded")),
            [pod(reason="Evicted", message="low on memory")],
            "PodEvicted",
        ),
        (None, [], "JobDeleted"),
        (
            job(),
            [pod({"waiting": {"reason": "ImagePullBackOff", "message": "no"}})],
            Running("ImagePullBackOff", "no"),
        ),
        (job(), [pod({"waiting": {"reason": "ContainerCreating"}})], Running()),
        (job(), [pod({"waiting": {"reason": "InvalidImageName", "message": "bad"}})], "Invalid"),
    ],
)
def test_verdict(the_job: Any, pods: list[dict[str, Any]], expected: Any) -> None:
    got = job_outcome.verdict(the_job, pods)
    if expected is Succeeded:
        assert isinstance(got, Succeeded) and got.result["exitCode"] == 0
    elif expected == "Invalid":
        assert isinstance(got, NonRetryable) and got.reason == "InvalidImage"
    elif isinstance(expected, str):
        assert type(got).__name__ == expected and getattr(got, "reason", None) == expected
    else:
        assert got == expected


def test_a_failed_container_names_its_exit_code_and_keeps_its_log_tail() -> None:
    log_tail = "reading input\nerror: no such file /data/in.mp4"
    got = job_outcome.verdict(
        job("j-1", ("Failed", "BackoffLimitExceeded")), [pod(terminated(3, message=log_tail))]
    )
    assert isinstance(got, job_outcome.ContainerFailed)
    assert str(got) == "exit code 3: error: no such file /data/in.mp4"
    assert got.details == log_tail


def test_a_json_termination_message_is_the_results_output() -> None:
    got = job_outcome.verdict(
        job("j-1", ("Complete", "")),
        [pod(terminated(0, "Completed", message='{"path": "/out.mp4"}'))],
    )
    assert isinstance(got, Succeeded)
    assert got.result == {
        "job": "j-1",
        "exitCode": 0,
        "pod": "p",
        "message": '{"path": "/out.mp4"}',
        "output": {"path": "/out.mp4"},
    }


def test_deadline_exceeded_is_a_timeout_for_the_retry_policy() -> None:
    got = job_outcome.verdict(job("j-1", ("Failed", "DeadlineExceeded")), [])
    assert isinstance(got, TimeoutError)


def test_job_names_fit_a_label_value_and_stay_distinct() -> None:
    assert job_name("resize", 2) == "resize-2"
    long_a, long_b = "a" * 70 + "x", "a" * 70 + "y"
    assert len(job_name(long_a, 10)) == 63 and job_name(long_a, 10).endswith("-10")
    assert job_name(long_a, 1) != job_name(long_b, 1)
    assert job_name("pipe-step_a.b", 1) == "pipe-step-a-b-1"


CONTAINER = {
    "image": "busybox:1.36",
    "command": ["sh", "-c"],
    "args": ["echo hi"],
    "env": [
        {"name": "A", "value": "1"},
        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ],
    "resources": {"limits": {"cpu": "2", "memory": "1Gi"}},
    "serviceAccountName": "runner",
    "imagePullSecrets": ["regcred"],
    "labels": {"team": "media", TASK_KEY: "forged"},
}


def payload() -> ContainerPayload:
    spec = TaskSpec.model_validate({"container": CONTAINER, "timeout": "90s"})
    _, queued = runnable(spec)
    owner = Owner(kind="Task", name="transcode", uid="u-1")
    return ContainerPayload.model_validate(with_job(queued, owner, "transcode", 90))


def test_the_job_of_an_attempt() -> None:
    body = job_body(payload(), "u-1", 2)
    assert body["metadata"]["name"] == "transcode-2"
    assert body["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "taskorch.io/v1alpha1",
            "kind": "Task",
            "name": "transcode",
            "uid": "u-1",
            "controller": True,
        }
    ]
    spec = body["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 90
    template = spec["template"]
    # the user's labels, but never over taskorch's own
    assert template["metadata"]["labels"]["team"] == "media"
    assert template["metadata"]["labels"][TASK_KEY] == body["metadata"]["labels"][TASK_KEY]
    assert template["metadata"]["labels"][TASK_KEY] != "forged"
    pod_spec = template["spec"]
    assert pod_spec["restartPolicy"] == "Never"
    assert pod_spec["serviceAccountName"] == "runner"
    assert pod_spec["imagePullSecrets"] == [{"name": "regcred"}]
    [c] = pod_spec["containers"]
    assert c["image"] == "busybox:1.36" and c["args"] == ["echo hi"]
    assert c["env"][1] == {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    assert c["resources"] == {"limits": {"cpu": "2", "memory": "1Gi"}}
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_which_job_a_new_claim_waits_on() -> None:
    running, failed, done = (
        job("a-1"),
        job("a-1", ("Failed", "x")),
        job("a-2", ("Complete", ""), attempt=2),
    )
    assert adoptable([]) is None
    assert adoptable([running]) is running  # handed back or lost: wait on it again
    assert adoptable([failed]) is None  # its failure may be settled: a new attempt
    assert adoptable([failed, done]) is done  # succeeded but never settled
    gone = job("a-3", attempt=3)
    gone["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert adoptable([running, gone]) is running


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"type": "x", "container": {"image": "i"}},
            "set exactly one of type (a handler), command and container",
        ),
        ({"container": {"image": "i"}, "payload": {"a": 1}}, "no payload"),
        ({"container": {"image": "i"}, "queue": "fast"}, "taskorch.jobs"),
        ({"container": {}}, "image"),
    ],
)
def test_bad_container_specs_are_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        TaskSpec.model_validate(spec)


def test_container_tasks_and_steps_wait_on_the_jobs_queue() -> None:
    assert task_queue({"container": {"image": "i"}}) == "taskorch.jobs"
    assert task_queue({"type": "t", "queue": "fast"}) == "fast"
    with pytest.raises(ValidationError, match="no payload, env, workingDir or queue"):
        WorkflowStep.model_validate({"name": "s", "container": {"image": "i"}, "queue": "q"})


class FakeKube:
    """Jobs and pods in memory; the test moves them along."""

    def __init__(self, owner_spec: dict[str, Any]) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.owner = {"metadata": {"uid": "u-1"}, "spec": owner_spec}

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.owner

    async def create_job(self, namespace: str, body: dict[str, Any]) -> bool:
        name = body["metadata"]["name"]
        if name in self.jobs:
            return False
        self.jobs[name] = {**body, "status": {}}
        return True

    async def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.jobs.get(name)

    async def delete_job(self, namespace: str, name: str) -> None:
        self.deleted.append(name)
        self.jobs.pop(name, None)


class Observer:
    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self.rounds = asyncio.Queue[None]()

    async def next(self, key: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        await self.rounds.get()
        jobs = [j for j in self.kube.jobs.values() if j["metadata"]["labels"][TASK_KEY] == key]
        return jobs, list(self.kube.pods)


async def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Let the event loop run until `condition` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the condition"
        await asyncio.sleep(0.001)


def context(stop: list[str | None]) -> Context:
    return Context(
        "u-1", "taskorch.container", "ns", "taskorch.jobs", 1, "w", stop_reason=lambda: stop[0]
    )


async def test_the_handler_creates_the_job_and_returns_its_result() -> None:
    kube = FakeKube({"container": CONTAINER})
    observer = Observer(kube)
    handler = ContainerTasks(kube, "ns", observer, pull_grace_seconds=60)
    run = asyncio.create_task(handler.run(context([None]), payload()))
    observer.rounds.put_nowait(None)  # the adoption check: no Job yet
    observer.rounds.put_nowait(None)  # the Job runs
    await until(lambda: kube.jobs)
    [name] = kube.jobs
    assert name == "transcode-1"
    kube.jobs[name]["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    kube.pods = [
        {
            "metadata": {"name": "transcode-1-x", "labels": {JOB_NAME: name}},
            "status": {"containerStatuses": [{"state": terminated(0, "Completed", "done")}]},
        }
    ]
    observer.rounds.put_nowait(None)
    result = await asyncio.wait_for(run, 5)
    assert result == {"job": name, "exitCode": 0, "pod": "transcode-1-x", "message": "done"}


@pytest.mark.parametrize(
    ("reason", "deleted"), [("cancel", True), ("release", False), ("lost", False)]
)
async def test_a_cancel_deletes_the_job_a_release_leaves_it_running(
    reason: str, deleted: bool
) -> None:
    kube = FakeKube({"container": CONTAINER})
    observer = Observer(kube)
    stop: list[str | None] = [None]
    run = asyncio.create_task(
        ContainerTasks(kube, "ns", observer, 60).run(context(stop), payload())
    )
    observer.rounds.put_nowait(None)
    await until(lambda: kube.jobs)
    assert list(kube.jobs) == ["transcode-1"]
    stop[0] = reason
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert kube.deleted == (["transcode-1"] if deleted else [])


async def test_an_image_that_never_pulls_fails_the_attempt_after_the_grace() -> None:
    kube = FakeKube({"container": CONTAINER})
    observer = Observer(kube)
    run = asyncio.create_task(
        ContainerTasks(kube, "ns", observer, 0.05).run(context([None]), payload())
    )
    observer.rounds.put_nowait(None)
    await until(lambda: kube.jobs)
    kube.pods = [
        {
            "metadata": {"name": "p", "labels": {JOB_NAME: "transcode-1"}},
            "status": {
                "containerStatuses": [
                    {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "nope"}}}
                ]
            },
        }
    ]
    # Listings keep coming, as the observer's would, until the pull grace has passed.
    while not run.done():
        observer.rounds.put_nowait(None)
        await until(lambda: observer.rounds.empty() or run.done())
    with pytest.raises(job_outcome.ImagePullBackOff, match="ImagePullBackOff: nope"):
        await run
    assert kube.deleted == ["transcode-1"]


async def test_redis_cannot_choose_what_runs() -> None:
    """A payload whose image its owner does not declare is refused (a forged Redis entry)."""
    kube = FakeKube({"container": {**CONTAINER, "image": "other:1"}})
    observer = Observer(kube)
    observer.rounds.put_nowait(None)
    with pytest.raises(
        NonRetryable, match=re.escape("declares no such container (image 'busybox:1.36')")
    ):
        await ContainerTasks(kube, "ns", observer, 60).run(context([None]), payload())
    assert kube.jobs == {}


def test_each_enqueue_is_a_run_of_its_own() -> None:
    """A step enqueued again (a workflow retry) gets Jobs under a new key: never the old ones."""
    first, again = payload(), payload()
    assert first.run != again.run
    assert task_key("u-1", first.run) != task_key("u-1", again.run)


def test_reserved_queues_are_refused() -> None:
    with pytest.raises(
        ValidationError, match=re.escape("queues named taskorch.* are taskorch's own")
    ):
        TaskSpec.model_validate({"type": "x", "queue": "taskorch.jobs"})
    with pytest.raises(ValidationError, match="taskorch's own"):
        WorkflowStep.model_validate({"name": "s", "type": "x", "queue": "taskorch.jobs"})


class SlowKube:
    """Lists that take a while, recording the selectors asked for."""

    def __init__(self) -> None:
        self.selectors: list[str] = []

    async def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.selectors.append(selector)
        await asyncio.sleep(0.05)
        keys = selector.split("(")[1].split(")")[0].split(",")
        return [{"metadata": {"name": f"job-{k}", "labels": {TASK_KEY: k}}} for k in keys]

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        await asyncio.sleep(0.05)
        return []


async def test_a_task_joining_a_listing_under_way_waits_for_one_that_asks_for_it() -> None:
    from taskorch.controller.job_runner import JobObserver

    kube = SlowKube()
    observer = JobObserver(kube, "ns", period=0.01)
    first = asyncio.create_task(observer.next("a"))
    await until(lambda: kube.selectors)  # the listing for "a" is under way
    late = await observer.next("b")
    assert late[0] == [{"metadata": {"name": "job-b", "labels": {TASK_KEY: "b"}}}]
    assert (await first)[0][0]["metadata"]["name"] == "job-a"


def test_a_steps_rendered_args_are_text_as_a_pod_takes_them() -> None:
    from taskorch.controller.container_tasks import argv_as_text

    rendered = {"command": ["sh"], "args": ["-n", 3, {"a": 1}, None]}
    assert argv_as_text(rendered) == {"command": ["sh"], "args": ["-n", "3", '{"a": 1}', "null"]}
