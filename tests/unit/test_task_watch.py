"""The Tasks' own watch (controller/task_watch.py) and admission's enqueue batching, with fakes:
no server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from taskorch.controller.admission import Admission, EnqueueBatcher
from taskorch.controller.task_watch import TaskSource, TaskWatch
from taskorch.controller.tracker import Tracker
from taskorch.errors import InvalidTask
from taskorch.queue.broker import Broker
from taskorch.queue.model import TaskRequest


def _task(uid: str, phase: str | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"uid": uid, "name": f"t-{uid}", "namespace": "ns", "generation": 1},
        "spec": {"type": "noop", **spec},
    }
    if phase:
        body["status"] = {"phase": phase}
    return body


class FakeAdmission:
    """Admission's step/run_step seam: records what ran, and holds a step until released."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, str | None]] = []
        self.release = asyncio.Event()

    def step(self, event_type: str | None, body: dict[str, Any]) -> Any:
        if event_type == "DELETED" or (body.get("status") or {}).get("phase") == "Succeeded":
            return None

        async def admit(b: dict[str, Any]) -> None:
            self.ran.append((b["metadata"]["uid"], (b.get("status") or {}).get("phase")))
            await self.release.wait()

        return admit

    async def run_step(self, step: Any, body: dict[str, Any]) -> None:
        await step(body)


class FakeTracker:
    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str]] = []

    def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        self.seen.append((event_type, body["metadata"]["uid"]))


class FakeBroker:
    def __init__(self, refuse: str | None = None) -> None:
        self.calls: list[tuple[str, str, list[str]]] = []
        self.cancelled: list[str] = []
        self.refuse = refuse

    async def enqueue_many(
        self, namespace: str, queue: str, requests: Sequence[TaskRequest]
    ) -> list[str]:
        ids = [r.id or "" for r in requests]
        self.calls.append((namespace, queue, ids))
        if self.refuse in ids:
            raise InvalidTask(f"refused {self.refuse}")
        return ids

    async def cancel(self, namespace: str, queue: str, task_id: str, *_: Any) -> str | None:
        self.cancelled.append(task_id)
        return None


def _watch(admission: FakeAdmission, tracker: FakeTracker, broker: FakeBroker) -> TaskWatch:
    return TaskWatch(
        cast(TaskSource, None),
        cast(Broker, broker),
        cast(Admission, admission),
        cast(Tracker, tracker),
        ["ns"],
    )


async def test_a_tasks_events_run_in_order_and_those_that_wait_collapse_into_the_latest() -> None:
    admission, tracker, broker = FakeAdmission(), FakeTracker(), FakeBroker()
    watch = _watch(admission, tracker, broker)
    watch._dispatch([(None, _task("a")), ("ADDED", _task("b"))])
    await asyncio.sleep(0)
    # "a" is being handled: its next events wait, and only the newest of them runs.
    watch._dispatch([("MODIFIED", _task("a", "Pending")), ("MODIFIED", _task("a", "Queued"))])
    await asyncio.sleep(0)
    assert admission.ran == [("a", None), ("b", None)]
    admission.release.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert admission.ran == [("a", None), ("b", None), ("a", "Queued")]
    assert not watch.busy and not watch.latest
    # Every event reaches the tracker, in order; a deletion cancels the task in Redis.
    watch._dispatch([("MODIFIED", _task("a", "Succeeded")), ("DELETED", _task("a", "Succeeded"))])
    await asyncio.sleep(0)
    assert [e for e in tracker.seen if e[1] == "a"] == [
        (None, "a"),
        ("MODIFIED", "a"),
        ("MODIFIED", "a"),
        ("MODIFIED", "a"),
        ("DELETED", "a"),
    ]
    assert broker.cancelled == ["a"]
    assert len(admission.ran) == 3  # nothing to admit in a finished or deleted Task


def _request(task_id: str) -> TaskRequest:
    return TaskRequest(type="noop", payload=None, id=task_id)


async def test_the_enqueues_of_one_turn_go_in_one_call_per_queue() -> None:
    broker = FakeBroker()
    batcher = EnqueueBatcher(cast(Broker, broker))
    ids = await asyncio.gather(
        batcher.enqueue("ns", "q1", _request("a")),
        batcher.enqueue("ns", "q2", _request("b")),
        batcher.enqueue("ns", "q1", _request("c")),
    )
    assert ids == ["a", "b", "c"]
    assert sorted(broker.calls) == [("ns", "q1", ["a", "c"]), ("ns", "q2", ["b"])]
    assert await batcher.enqueue("ns", "q1", _request("d")) == "d"  # a later turn: a new call
    assert broker.calls[-1] == ("ns", "q1", ["d"])


async def test_a_request_the_script_refuses_does_not_fail_the_others_of_its_batch() -> None:
    broker = FakeBroker(refuse="b")
    batcher = EnqueueBatcher(cast(Broker, broker))
    got = await asyncio.gather(
        *(batcher.enqueue("ns", "q", _request(i)) for i in "abc"), return_exceptions=True
    )
    assert got[0] == "a" and got[2] == "c"
    assert isinstance(got[1], InvalidTask)
