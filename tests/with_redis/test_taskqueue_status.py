"""TaskQueue status writes (controller/taskqueues.py) against a real redis-server, the API server
faked: the watch event of the operator's own status write causes no further write."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from taskorch.controller.taskqueues import TaskQueueRunner
from taskorch.queue.broker import Broker


@dataclass
class FakeKube:
    writes: list[dict[str, Any]] = field(default_factory=list)

    async def patch_status(
        self, plural: str, namespace: str, name: str, uid: str, status: dict[str, Any]
    ) -> bool:
        self.writes.append(status)
        return True


def body(status: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "team-tq",
            "name": "emails",
            "uid": "u1",
            "generation": generation,
        },
        "spec": {"maxConcurrent": 3},
        **({"status": status} if status else {}),
    }


async def test_its_own_status_write_does_not_start_a_write_loop(aredis: aioredis.Redis) -> None:
    kube = FakeKube()
    runner = TaskQueueRunner(Broker(aredis), kube, interval=10)  # type: ignore[arg-type]
    await runner.on_event("ADDED", body())
    assert len(kube.writes) == 1
    assert (await Broker(aredis).config("team-tq", "emails"))["max_concurrent"] == "3"
    for _ in range(5):  # the watch echoes each write back
        await runner.on_event("MODIFIED", body(kube.writes[-1]))
    assert len(kube.writes) == 1
    # a spec change is applied at once
    changed = body(kube.writes[-1], generation=2)
    changed["spec"] = {"maxConcurrent": 5}
    await runner.on_event("MODIFIED", changed)
    assert (await Broker(aredis).config("team-tq", "emails"))["max_concurrent"] == "5"
