"""What the HTTP API and the dashboard both do when a caller steers work: each function checks the
caller's RBAC for the action first, then acts through the queue's scripts, or, for a Kubernetes
object, sends the change with the caller's own token so the API server decides."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from taskorch.api.schedule import child_body, child_kind
from taskorch.controller.workflows import RETRY_ANNOTATION
from taskorch.queue.broker import Broker
from taskorch.queue.inspect import Inspector
from taskorch.queue.model import TERMINAL, TaskInfo, TaskRef, now_ms
from taskorch.server.auth import Action, Caller, Forbidden, Gate
from taskorch.server.errors import Conflict, Missing
from taskorch.server.kube import KubeReviewer


@dataclass
class Actor:
    gate: Gate
    broker: Broker
    kube: KubeReviewer | None

    async def _check(self, caller: Caller, verb: str, resource: str, namespace: str) -> None:
        await self.gate.check(caller, Action(verb, resource, namespace))

    def _token(self, caller: Caller, token: str | None) -> tuple[KubeReviewer, str]:
        if self.kube is None or token is None:
            raise Forbidden("changing a Kubernetes object needs your own token")
        if caller.anonymous:
            raise Forbidden("anonymous access is read-only")
        if self.gate.read_only:
            raise Forbidden("the server runs read-only")
        return self.kube, token

    async def task(self, namespace: str, queue: str, task_id: str) -> TaskInfo:
        info = await self.broker.get(namespace, queue, task_id)
        if info is None:
            raise Missing(f"no task {task_id} in queue {namespace}/{queue}")
        return info

    async def cancel(
        self, caller: Caller, token: str | None, namespace: str, queue: str, task_id: str
    ) -> str:
        await self._check(caller, "update", "tasks", namespace)
        info = await self.task(namespace, queue, task_id)
        if info.state in TERMINAL:
            raise Conflict(f"task {task_id} already ended ({info.state})")
        if info.cr_name and self.kube is not None and token is not None:
            # A Task object: its spec says it is cancelled, as `kubectl patch` would.
            kube, token = self._token(caller, token)
            await kube.patch_as(token, "tasks", namespace, info.cr_name, {"spec": {"cancel": True}})
            return f"task/{info.cr_name}: spec.cancel set"
        await self.broker.cancel(namespace, queue, task_id)
        return f"task {task_id} cancelled"

    async def requeue(self, caller: Caller, namespace: str, queue: str, task_id: str) -> str:
        await self._check(caller, "update", "tasks", namespace)
        info = await self.task(namespace, queue, task_id)
        if not await self.broker.requeue_dead(namespace, queue, [task_id]):
            raise Conflict(f"task {task_id} is {info.state}, not dead: nothing to requeue")
        return f"task {task_id} requeued"

    async def delete(self, caller: Caller, namespace: str, queue: str, task_id: str) -> str:
        await self._check(caller, "delete", "tasks", namespace)
        info = await self.task(namespace, queue, task_id)
        if info.workflow:
            # A step's record is the workflow's memory of it: without it the step runs again.
            raise Conflict(f"task {task_id} is a step of workflow {info.workflow.split('/')[0]}")
        if info.cr_name:
            raise Conflict(
                f"task {task_id} belongs to task/{info.cr_name}: delete that object instead"
            )
        if not await self.broker.delete_finished(namespace, queue, task_id):
            raise Conflict(f"task {task_id} is {info.state}: cancel it before deleting it")
        return f"task {task_id} deleted"

    async def requeue_dead(
        self, caller: Caller, namespace: str, queue: str, type_: str | None = None
    ) -> list[str]:
        """Requeue every task dead-lettered until now (of `type_` only, if given). A snapshot:
        a requeued task that dies again meanwhile is not requeued again by this call."""
        await self._check(caller, "update", "tasks", namespace)
        inspector = Inspector(self.broker)
        until, revived, offset = now_ms(), [], 0
        while page := await inspector.dead_ids_until(namespace, queue, until, offset, 500):
            infos = await self.broker.get_many([TaskRef(namespace, queue, i) for i in page])
            wanted = [i.id for i in infos if i is not None and (not type_ or i.type == type_)]
            done = await self.broker.requeue_dead(namespace, queue, wanted)
            revived += done
            offset += len(page) - len(done)  # the requeued left the DLQ; the others stay
        return revived

    async def set_paused(
        self, caller: Caller, token: str | None, namespace: str, queue: str, paused: bool
    ) -> str:
        await self._check(caller, "update", "taskqueues", namespace)
        done = "paused" if paused else "resumed"
        if self.kube is not None and await self.kube.get("taskqueues", namespace, queue):
            # Its TaskQueue's spec.paused is the one source of truth: patch it as the caller.
            kube, token = self._token(caller, token)
            await kube.patch_as(token, "taskqueues", namespace, queue, {"spec": {"paused": paused}})
            return f"{done} {namespace}/{queue}: TaskQueue spec.paused={str(paused).lower()}"
        await (self.broker.pause if paused else self.broker.resume)(namespace, queue)
        return f"{done} {namespace}/{queue}"

    async def retry_workflow(
        self, caller: Caller, token: str | None, namespace: str, name: str
    ) -> str:
        kube, token = self._token(caller, token)
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        patch = {"metadata": {"annotations": {RETRY_ANNOTATION: stamp}}}
        await kube.patch_as(token, "workflows", namespace, name, patch)
        return f"workflow/{name}: retry requested"

    async def trigger_schedule(
        self, caller: Caller, token: str | None, namespace: str, name: str
    ) -> str:
        kube, token = self._token(caller, token)
        # The server reads the Schedule: the caller must be allowed to read it too.
        await self._check(caller, "get", "schedules", namespace)
        schedule = await kube.get("schedules", namespace, name)
        if schedule is None:
            raise Missing(f"no schedule {namespace}/{name}")
        kind, plural = child_kind(schedule["spec"])
        created = await kube.create_as(token, plural, namespace, child_body(schedule, None, None))
        return f"{kind.lower()}/{created['metadata']['name']} created"

    async def suspend_schedule(
        self, caller: Caller, token: str | None, namespace: str, name: str, suspend: bool
    ) -> str:
        kube, token = self._token(caller, token)
        await kube.patch_as(token, "schedules", namespace, name, {"spec": {"suspend": suspend}})
        return f"schedule/{name}: {'suspended' if suspend else 'resumed'}"
