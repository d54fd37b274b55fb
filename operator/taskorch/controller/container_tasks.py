"""Container tasks: each attempt a Kubernetes Job, created and followed by the operator.

A container task is a Redis task like any other (type CONTAINER_TYPE, on its namespace's
JOBS_QUEUE), so retries, backoff, deadlines, priorities, concurrency keys, cancel and the status
path are the queue's, exactly as for handlers. What runs it is the operator's job runner
(controller/job_runner.py): a worker whose one handler, below, creates the attempt's Job, owned
by the Task (or the Workflow of a step) so that deleting it deletes the Jobs, and follows the
Job and its pod until they say how the attempt ended (controller/job_outcome.py).

A Job outlives the operator: an attempt handed back by a stopping operator (or lost with it)
finds its Job again by label when it is claimed next, and waits on it rather than start
another. A cancel deletes the Job; a failed attempt's Job is kept (its pod's logs are there to
read) until the Task is deleted."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from taskorch.api.base import GROUP, VERSION
from taskorch.api.container import CONTAINER_TYPE, JOBS_QUEUE, ContainerSpec
from taskorch.api.reasons import Reason
from taskorch.api.task import container_payload
from taskorch.api.workflow import WorkflowSpec, WorkflowStep
from taskorch.controller import job_outcome
from taskorch.controller.job_outcome import Running, Succeeded
from taskorch.errors import NonRetryable
from taskorch.worker.app import App, Context

log = logging.getLogger("taskorch.containers")

CONTAINERS_DISABLED = (
    "container tasks are off in this operator: install the chart with "
    "operator.containerTasks.enabled=true (it grants the operator RBAC on jobs and pods)"
)
MANAGED_BY = {"app.kubernetes.io/managed-by": "taskorch"}
MANAGED = "app.kubernetes.io/managed-by=taskorch"  # as a label selector
TASK_KEY = "taskorch.io/task-key"  # a label: a hash of the task id (ids can exceed 63 chars)
ATTEMPT = "taskorch.io/attempt"
TASK_ID = "taskorch.io/task-id"  # an annotation: the task id itself
JOB_NAME = "batch.kubernetes.io/job-name"  # set on a Job's pods by the Job controller
MAX_NAME = 63  # a Job's name becomes a label value on its pods


class Owner(BaseModel):
    """The object whose deletion deletes the Job: the Task, or a step's Workflow."""

    model_config = ConfigDict(populate_by_name=True)

    kind: str
    name: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
        }


class ContainerPayload(BaseModel):
    """What the queue carries for a container task: the pod spec (rendered, in a Workflow
    step), its owner, the Jobs' base name and the timeout as the Job's activeDeadlineSeconds."""

    model_config = ConfigDict(populate_by_name=True)

    container: ContainerSpec
    owner: Owner
    job_name: str = Field(alias="jobName")
    # Drawn at each enqueue: a step run again (a workflow retry) never waits on the Jobs of
    # its earlier run, while a claim of the same run (after a release) finds its Job.
    run: str = ""
    active_deadline_seconds: int | None = Field(default=None, alias="activeDeadlineSeconds")


def with_job(
    payload: JsonValue, owner: Owner, base_name: str, timeout: float | None
) -> dict[str, JsonValue]:
    """A container task's queued payload: runnable()'s, plus what the job runner needs."""
    assert isinstance(payload, dict)
    out: dict[str, JsonValue] = {
        **payload,
        "owner": owner.model_dump(),
        "jobName": base_name,
        "run": secrets.token_hex(4),
    }
    if timeout:
        # Kubernetes enforces it, even while the operator is away (reason DeadlineExceeded).
        out["activeDeadlineSeconds"] = max(1, round(timeout))
    return out


def argv_as_text(rendered: dict[str, Any]) -> dict[str, Any]:
    """A step's rendered command and args as a pod takes them: a whole-string reference keeps
    its JSON type when rendered (`{{ steps.count.result.n }}` → 3), written back as JSON text."""
    return {
        k: [v if isinstance(v, str) else json.dumps(v) for v in values]
        for k, values in rendered.items()
    }


def step_queue(step: WorkflowStep, spec: WorkflowSpec) -> str:
    if step.container is not None:
        return JOBS_QUEUE
    return step.queue or spec.queue


def task_key(task_id: str, run: str = "") -> str:
    return hashlib.sha256(f"{task_id}/{run}".encode()).hexdigest()[:40]


def job_name(base: str, attempt: int) -> str:
    """`<base>-<attempt>`, cut (with a hash of the whole) to a name Kubernetes accepts."""
    base = base.lower().replace(".", "-").replace("_", "-")
    suffix = f"-{attempt}"
    if len(base) + len(suffix) > MAX_NAME:
        digest = hashlib.sha256(base.encode()).hexdigest()[:8]
        base = f"{base[: MAX_NAME - len(suffix) - 9].rstrip('-')}-{digest}"
    return base + suffix


def job_body(payload: ContainerPayload, task_id: str, attempt: int) -> dict[str, Any]:
    c = payload.container
    ours = {**MANAGED_BY, TASK_KEY: task_key(task_id, payload.run), ATTEMPT: str(attempt)}
    container: dict[str, Any] = {
        "name": "task",
        "image": c.image,
        # On failure the last log lines are the message: lastError shows them.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    dumped = container_payload(c)
    for field in ("command", "args", "env", "resources", "imagePullPolicy", "workingDir"):
        if field in dumped:
            container[field] = dumped[field]
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    for field in ("serviceAccountName", "nodeSelector", "tolerations"):
        if field in dumped:
            pod[field] = dumped[field]
    if c.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in c.image_pull_secrets]
    spec: dict[str, Any] = {
        "backoffLimit": 0,  # the Task's retry policy makes the attempts, a Job each
        "template": {
            "metadata": {
                "labels": {**(c.labels or {}), **ours},
                "annotations": c.annotations or {},
            },
            "spec": pod,
        },
    }
    if payload.active_deadline_seconds:
        spec["activeDeadlineSeconds"] = payload.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(payload.job_name, attempt),
            "labels": ours,
            "annotations": {TASK_ID: task_id},
            "ownerReferences": [payload.owner.reference()],
        },
        "spec": spec,
    }


def _attempt_of(job: dict[str, Any]) -> int:
    try:
        return int(job["metadata"].get("labels", {}).get(ATTEMPT, 0))
    except ValueError:
        return 0


def adoptable(jobs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Job an attempt should wait on instead of creating one: the task's newest Job if it
    still runs (its attempt was handed back or lost) or succeeded (its end was never settled).
    A failed one is not: that failure may be settled already, so a new attempt starts."""
    live = [j for j in jobs if not j["metadata"].get("deletionTimestamp")]
    if not live:
        return None
    newest = max(live, key=lambda j: (j["metadata"].get("creationTimestamp") or "", _attempt_of(j)))
    if job_outcome.condition(newest, "Failed") or job_outcome.condition(newest, "FailureTarget"):
        return None
    return newest


async def delete_running_jobs(kube: Any, namespace: str, owner_uid: str) -> None:
    """Delete the unfinished Jobs of a cancelled Task or Workflow at once: the one an attempt
    follows (faster than its worker's next heartbeat), and one left running by an attempt
    handed back and not claimed again (which no handler would delete)."""
    try:
        for job in await kube.list_jobs(namespace, MANAGED):
            owners = {o.get("uid") for o in job["metadata"].get("ownerReferences") or []}
            ended = job_outcome.condition(job, "Complete") or job_outcome.condition(job, "Failed")
            if owner_uid in owners and not ended:
                await kube.delete_job(namespace, job["metadata"]["name"])
    except Exception as e:
        log.warning("could not delete the Jobs of %s/%s: %s", namespace, owner_uid, e)


def _comparable(container: ContainerSpec, leave_out: set[str]) -> dict[str, Any]:
    return {k: v for k, v in container_payload(container).items() if k not in leave_out}


class Snapshots(Protocol):
    """Where the handler reads its Job and pods from (job_runner.JobObserver; a fake in the
    unit tests): the task's as of the next listing."""

    async def next(self, key: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]: ...


class ContainerTasks:
    """The handler of CONTAINER_TYPE for one namespace."""

    def __init__(
        self, kube: Any, namespace: str, observer: Snapshots, pull_grace_seconds: float
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.observer = observer
        self.pull_grace = pull_grace_seconds

    def app(self) -> App:
        app = App()

        @app.handler(CONTAINER_TYPE)
        async def run_container(ctx: Context, payload: ContainerPayload) -> dict[str, Any]:
            return await self.run(ctx, payload)

        return app

    async def run(self, ctx: Context, payload: ContainerPayload) -> dict[str, Any]:
        key = task_key(ctx.task_id, payload.run)
        name: str | None = None
        try:
            jobs, _ = await self._snapshot(key)
            job = adoptable(jobs)
            if job is None:
                await self._check_owner(payload)
                job = await self._create(payload, ctx)
            else:
                log.info("task %s: waiting on Job %s again", ctx.task_id, job["metadata"]["name"])
            name = job["metadata"]["name"]
            return await self._follow(key, name)
        except asyncio.CancelledError:
            # A cancel ends the attempt, and its Job with it. Anything else (a release, a lost
            # lease, the process stopping) leaves the Job running for the next claim to find.
            if name is not None and ctx.stop_reason() == "cancel":
                await asyncio.shield(self._delete(name))
            raise

    async def _check_owner(self, payload: ContainerPayload) -> None:
        """Redis is not trusted to say what runs: the owner must exist and declare a container
        of this image and ServiceAccount, so a Redis client (a worker) cannot have the operator
        start pods of its own choosing."""
        owner = payload.owner
        plural = {"Task": "tasks", "Workflow": "workflows"}.get(owner.kind)
        body = await self.kube.get(plural, self.namespace, owner.name) if plural else None
        if body is None or body["metadata"]["uid"] != owner.uid:
            raise NonRetryable(Reason.InvalidPayload, f"{owner.kind} {owner.name} is gone")
        spec = body.get("spec") or {}
        if owner.kind == "Task":
            declared, templated = [spec.get("container")], set()
        else:  # a step's command and args may hold upstream results, rendered since
            steps = [*(spec.get("steps") or []), *(spec.get("finally") or [])]
            declared, templated = [s.get("container") for s in steps], {"command", "args"}
        wanted = _comparable(payload.container, templated)
        if not any(
            d and _comparable(ContainerSpec.model_validate(d), templated) == wanted
            for d in declared
        ):
            raise NonRetryable(
                Reason.InvalidPayload,
                f"{owner.kind} {owner.name} declares no such container (image "
                f"{payload.container.image!r})",
            )

    async def _create(self, payload: ContainerPayload, ctx: Context) -> dict[str, Any]:
        body = job_body(payload, ctx.task_id, ctx.attempt)
        name = body["metadata"]["name"]
        if not await self._create_job(body):
            existing = await self.kube.read_job(self.namespace, name)
            labels = (existing or {}).get("metadata", {}).get("labels") or {}
            ours = existing is not None and labels.get(TASK_KEY) == task_key(
                ctx.task_id, payload.run
            )
            if ours and existing is not None and adoptable([existing]) is not None:
                return dict(existing)
            # Another task's Job, or an ended one of this task (a workflow step run again
            # from failure counts its attempts from 1 again): a name of its own.
            name = body["metadata"]["name"] = f"{name[: MAX_NAME - 5]}-{secrets.token_hex(2)}"
            if not await self._create_job(body):
                raise job_outcome.JobFailed(f"could not create Job {name}: it exists")
        log.info("task %s attempt %d: created Job %s", ctx.task_id, ctx.attempt, name)
        return body

    async def _create_job(self, body: dict[str, Any]) -> bool:
        try:
            created: bool = await self.kube.create_job(self.namespace, body)
        except ApiException as e:
            if e.status in (400, 422):  # the API server refuses this pod spec: every time
                message = f"the API server refused the Job: {e.reason}: {str(e.body)[:600]}"
                raise NonRetryable(Reason.InvalidSpec, message) from None
            raise
        return created

    async def _follow(self, key: str, name: str) -> dict[str, Any]:
        waiting_since: float | None = None
        while True:
            jobs, pods = await self._snapshot(key)
            job = next((j for j in jobs if j["metadata"]["name"] == name), None)
            mine = [p for p in pods if (p["metadata"].get("labels") or {}).get(JOB_NAME) == name]
            mine.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
            verdict = job_outcome.verdict(job, mine)
            if isinstance(verdict, Succeeded):
                return verdict.result
            if isinstance(verdict, NonRetryable):
                await self._delete(name)  # its pod would wait for ever
                raise verdict
            if isinstance(verdict, Exception):
                raise verdict
            assert isinstance(verdict, Running)
            if verdict.waiting is None:
                waiting_since = None
                continue
            waiting_since = waiting_since or time.monotonic()
            waited = time.monotonic() - waiting_since
            if waited >= self.pull_grace:
                # The kubelet would keep trying; the retry policy decides instead.
                await self._delete(name)
                raise job_outcome.stuck_error(name, verdict.waiting, verdict.message, waited)

    async def _snapshot(self, key: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The task's Jobs and pods as of the next listing; the API server's errors are waited
        out (the attempt's Job runs on without us)."""
        delay = 1.0
        while True:
            try:
                return await self.observer.next(key)
            except Exception as e:
                log.warning("listing the Jobs of container tasks failed: %s; retrying", e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _delete(self, name: str) -> None:
        try:
            await self.kube.delete_job(self.namespace, name)
        except Exception as e:
            log.warning("could not delete Job %s/%s: %s", self.namespace, name, e)
