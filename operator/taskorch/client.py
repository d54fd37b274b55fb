"""The SDK: enqueue straight into Redis (no Kubernetes object), then get, wait, cancel, requeue.

client = taskorch.Client(redis_url, namespace="team-a")
ids = await client.enqueue_many("process_image", payloads, queue="default")
result = await client.wait(ids[0], timeout=5)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from taskorch.api.task import priority_level
from taskorch.queue.broker import Broker
from taskorch.queue.model import TERMINAL, State, TaskInfo, TaskRequest
from taskorch.settings import Settings


class TaskFailed(Exception):
    """wait() on a task that ended dead-lettered or cancelled."""

    def __init__(self, info: TaskInfo) -> None:
        self.info = info
        err = info.error or {}
        super().__init__(
            f"task {info.id} ended {info.state}: {err.get('reason')}: {err.get('message')}"
        )


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

    async def close(self) -> None:
        await self.broker.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def enqueue(self, type: str, payload: Any = None, **options: Any) -> str:
        return (await self.enqueue_many(type, [payload], **options))[0]

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
        batch_size: int = 1000,
    ) -> list[str]:
        """Enqueue one task per payload, `batch_size` per round trip; returns their ids."""
        level = priority_level(priority)
        run_at = time.time() + delay if delay else None
        ukeys = iter(idempotency_keys) if idempotency_keys is not None else None
        requests = [
            TaskRequest(
                type=type,
                payload=p,
                priority=level,
                retry=retry,
                timeout=timeout,
                run_at=run_at,
                idempotency_key=next(ukeys) if ukeys else None,
            )
            for p in payloads
        ]
        q = queue or self.queue
        ids: list[str] = []
        for i in range(0, len(requests), batch_size):
            ids += await self.broker.enqueue_many(self.namespace, q, requests[i : i + batch_size])
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
