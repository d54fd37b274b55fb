"""The Workflow runner after an operator restart, against a real redis-server (the API server
faked): the end recorded in Redis before the operator died is still written to status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from taskorch.controller.workflows import WorkflowRunner
from taskorch.queue import keys
from taskorch.queue.broker import Broker
from taskorch.queue.model import Outcome, Settlement

NS = "team-wf"
UID = "0d6c1a52-5b5a-4c39-9a36-2f0f8a0c2d11"


@dataclass
class FakeKube:
    statuses: list[dict[str, Any]] = field(default_factory=list)

    async def patch_status(
        self, plural: str, namespace: str, name: str, uid: str, status: dict[str, Any]
    ) -> bool:
        self.statuses.append(status)
        return True


def body(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "chain",
            "namespace": NS,
            "uid": UID,
            "generation": 1,
            "creationTimestamp": "2026-11-25T00:00:00Z",
        },
        "spec": {"steps": [{"name": "only", "type": "t"}]},
        "status": status,
    }


async def test_an_end_recorded_but_not_yet_written_is_written_after_a_restart(
    aredis: aioredis.Redis,
) -> None:
    broker = Broker(aredis)
    first = WorkflowRunner(broker, FakeKube())  # type: ignore[arg-type]
    running = {"phase": "Running", "progress": "0/1"}
    first.bodies[UID] = body(running)
    await first.reconcile(NS, "chain", UID)  # enqueues the step
    result = await broker.settle_claim(NS, "default", "w", [], 1)
    [step] = result.claimed
    await broker.settle_claim(
        NS, "default", "w", [Settlement(step.id, step.fence, Outcome.ok, "1")], 0
    )
    # the old operator decided the end (recorded in Redis) and died before writing status
    await first._reconcile(NS, body(running))
    assert (await aredis.hget(keys.workflow(NS, UID), "ended")) == b"Succeeded"
    kube = FakeKube()
    second = WorkflowRunner(broker, kube)  # type: ignore[arg-type]
    second.bodies[UID] = body(running)
    await second.reconcile(NS, "chain", UID)
    assert kube.statuses and kube.statuses[-1]["phase"] == "Succeeded"
