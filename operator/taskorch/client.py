"""The SDK: enqueue straight into Redis (no Kubernetes object), then get, wait, cancel, requeue.

client = taskorch.Client(redis_url, namespace="team-a")
ids = await client.enqueue_many("process_image", payloads, queue="default")
result = await client.wait(ids[0], timeout=5)

Every option is checked by the same pydantic models as the Task CRD, so what `kubectl apply`
would refuse, the SDK refuses too (InvalidTask, naming the field), before anything is enqueued.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from taskorch import tracing
from taskorch.api.task import TaskSpec, priority_level, runnable
from taskorch.errors import InvalidTask, TaskFailed
from taskorch.queue.broker import Broker
from taskorch.queue.model import TERMINAL, State, TaskInfo, TaskRequest
from taskorch.settings import Settings

__all__ = ["Client", "InvalidTask", "TaskFailed"]


def validated_options(
    type: str,
    queue: str,
    priority: int | str,
    retry: dict[str, Any] | None,
    timeout: float | None,
    delay: float | None,
    concurrency_key: str | None = None,
    max_concurrent: int = 1,
) -> TaskSpec:
    """The options of an SDK enqueue as a TaskSpec (payload aside), or InvalidTask."""
    for name, value in (("timeout", timeout), ("delay", delay)):
        if value is not None and not value >= 0:
            raise InvalidTask(f"{name} must be a number of seconds >= 0, not {value!r}")
    try:
        return TaskSpec.model_validate(
            {
                "type": type,
                "queue": queue,
                "priority": priority,
                "retry": retry,
                "timeout": f"{round(timeout * 1000)}ms" if timeout else None,
                "concurrencyKey": concurrency_key,
                "maxConcurrent": max_concurrent,
            }
        )
    except ValidationError as e:
        raise _invalid(e) from e


def _invalid(e: ValidationError) -> InvalidTask:
    fields = "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err['input']!r})"
        for err in e.errors(include_url=False)
    )
    return InvalidTask(f"invalid task options: {fields}")


class Client:
    def __init__(
        self,
        redis_url: str | None = None,
        *,
        namespace: str | None = None,
        queue: str = "default",
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.namespace = namespace or self.settings.namespace
        self.queue = queue
        self.broker = Broker.from_url(redis_url or self.settings.redis_url, self.settings)
        # only where the application set up OpenTelemetry, or an OTLP endpoint is configured
        tracing.setup("taskorch-client", install=False)

    async def close(self) -> None:
        await self.broker.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def enqueue(self, type: str, payload: Any = None, **options: Any) -> str:
        return (await self.enqueue_many(type, [payload], **options))[0]

    async def enqueue_command(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        working_dir: str | None = None,
        **options: Any,
    ) -> str:
        """Run `argv` (no shell) on a worker started with --allow-commands: a command task, as
        a Task's spec.command; its result is {exitCode, stdout, stderr}. Options as enqueue's."""
        try:
            spec = TaskSpec.model_validate(
                {
                    "command": list(argv),
                    "env": [{"name": k, "value": v} for k, v in (env or {}).items()] or None,
                    "workingDir": working_dir,
                }
            )
        except ValidationError as e:
            raise _invalid(e) from e
        type_, payload = runnable(spec)
        return await self.enqueue(type_, payload, **options)

    async def enqueue_many(
        self,
        type: str,
        payloads: Iterable[Any],
        *,
        queue: str | None = None,
        priority: int | str = "normal",
        retry: dict[str, Any] | None = None,
        timeout: float | None = None,
        delay: float | None = None,
        idempotency_keys: Iterable[str | None] | None = None,
        concurrency_key: str | None = None,
        max_concurrent: int = 1,
        batch_size: int = 1000,
    ) -> list[str]:
        """Enqueue one task per payload, `batch_size` per round trip; returns their ids (for a
        held idempotency key, the id of the task that holds it). Raises InvalidTask, naming the
        field, for options the Task CRD would refuse or a payload over 64 KiB as JSON."""
        spec = validated_options(
            type,
            queue or self.queue,
            priority,
            retry,
            timeout,
            delay,
            concurrency_key,
            max_concurrent,
        )
        policy = spec.retry.model_dump(by_alias=True, exclude_none=True) if spec.retry else None
        payloads = list(payloads)
        keys: list[str | None] = [None] * len(payloads)
        if idempotency_keys is not None:
            keys = list(idempotency_keys)
            if len(keys) != len(payloads):
                raise InvalidTask(f"{len(keys)} idempotency keys for {len(payloads)} payloads")
            too_long = next((k for k in keys if k is not None and len(k) > 256), None)
            if too_long is not None:
                raise InvalidTask(f"idempotency key {too_long[:40]!r}… is over 256 characters")
        with tracing.enqueue_span(self.namespace, spec.queue, type, len(payloads)) as tp:
            return await self._enqueue(spec, payloads, keys, policy, timeout, delay, tp, batch_size)

    async def _enqueue(
        self,
        spec: TaskSpec,
        payloads: list[Any],
        keys: list[str | None],
        policy: dict[str, Any] | None,
        timeout: float | None,
        delay: float | None,
        traceparent: str,
        batch_size: int,
    ) -> list[str]:
        requests = [
            TaskRequest(
                type=runnable(spec)[0],
                payload=p,
                priority=priority_level(spec.priority),
                retry=policy,
                timeout=timeout,
                delay=delay,
                idempotency_key=k,
                concurrency_key=spec.concurrency_key or "",
                max_concurrent=spec.max_concurrent,
                traceparent=traceparent,
            )
            for p, k in zip(payloads, keys, strict=True)
        ]
        ids: list[str] = []
        for i in range(0, len(requests), batch_size):
            chunk = requests[i : i + batch_size]
            ids += await self.broker.enqueue_many(self.namespace, spec.queue, chunk)
        return ids

    async def get(self, task_id: str, *, queue: str | None = None) -> TaskInfo | None:
        return await self.broker.get(self.namespace, queue or self.queue, task_id)

    async def wait(
        self,
        task_id: str,
        *,
        queue: str | None = None,
        timeout: float = 30.0,
        interval: float = 0.01,
    ) -> Any:
        """Wait for the task to finish and return its result; raises TaskFailed or TimeoutError."""
        deadline = time.monotonic() + timeout
        delay = interval
        while True:
            info = await self.get(task_id, queue=queue)
            if info is not None and info.state in TERMINAL:
                if info.state is State.succeeded:
                    return info.result
                raise TaskFailed(info)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"task {task_id} not finished after {timeout}s")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    async def cancel(self, task_id: str, *, queue: str | None = None) -> str | None:
        return await self.broker.cancel(self.namespace, queue or self.queue, task_id)

    async def requeue(self, *task_ids: str, queue: str | None = None) -> list[str]:
        """Revive dead-lettered tasks; returns the ids that were in the DLQ."""
        return await self.broker.requeue_dead(self.namespace, queue or self.queue, task_ids)
