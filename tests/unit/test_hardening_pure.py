"""The hardening issue's pure pieces, with no server (numbers are the issue's defects)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ValidationError

import taskorch
from taskorch.api.task import TaskPhase, TaskStatus
from taskorch.client import validated_options
from taskorch.controller.status import cancelled_status, duplicate_status, task_status
from taskorch.controller.tracker import Tracker
from taskorch.queue.connection import connect
from taskorch.queue.model import State, TaskInfo, dumps
from taskorch.settings import Settings
from taskorch.supervise import LoopEnded, run_supervised
from taskorch.worker.failure import error_record
from taskorch.worker.queues import QueueSet
from taskorch.worker.retry import Retry


def test_1_dumps_never_writes_a_lone_surrogate() -> None:
    text = dumps({"message": "no such file: caf\udce9.jpg", "emoji": "ok 😀 é"})
    assert "\\udc" not in text and "\udce9" not in text
    assert json.loads(text) == {"message": "no such file: caf\ufffd.jpg", "emoji": "ok 😀 é"}
    text.encode("utf-8")  # what redis-py does with it: must not raise


async def _forever() -> None:
    await asyncio.Event().wait()


async def test_2_a_loop_that_fails_or_returns_stops_the_process() -> None:
    async def fails() -> None:
        raise RuntimeError("status writer broke")

    async def returns() -> None:
        return None

    with pytest.raises(LoopEnded, match="'status-writer' failed"):
        await run_supervised(_forever(), {"status-writer": fails(), "tracker": _forever()})
    with pytest.raises(LoopEnded, match="'metrics' ended"):
        await run_supervised(_forever(), {"metrics": returns()})


async def test_2_a_loop_that_swallows_its_cancellation_cannot_hang_the_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("taskorch.supervise.CANCEL_GRACE_SECONDS", 0.2)

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue  # as a cancelled blocking client call that swallows it

    async def main() -> str:
        await asyncio.sleep(0.05)
        return "drained"

    stubborn_loop = stubborn()
    started = time.monotonic()
    assert await run_supervised(main(), {"markers": stubborn_loop}) == "drained"
    assert time.monotonic() - started < 2
    stubborn_loop.close()


def test_10_backoff_does_not_overflow_after_many_failures() -> None:
    policy = Retry(max_attempts=5000, initial_delay=1.0, max_delay=300.0, jitter=False)
    assert policy.delay(1) == 1.0 and policy.delay(3) == 4.0
    assert policy.delay(1025) == 300.0 and policy.delay(100_000) == 300.0
    with pytest.raises(ValidationError, match="initialDelay"):
        Retry.from_spec({"initialDelay": 2})


def test_10_sdk_options_are_checked_by_the_crd_models() -> None:
    spec = validated_options("resize", "images", "high", {"maxAttempts": 2}, 1.5, None)
    assert spec.timeout == "1500ms" and spec.retry is not None and spec.retry.max_attempts == 2
    for kwargs, field_name in [
        ({"priority": 10}, "priority"),
        ({"priority": "urgent"}, "priority"),
        ({"retry": {"initialDelay": 2}}, "retry.initialDelay"),
        ({"retry": {"backoff": "quadratic"}}, "retry.backoff"),
        ({"queue": "UPPER"}, "queue"),
    ]:
        options: dict[str, Any] = {"priority": "normal", "retry": None, "queue": "default"}
        options.update(kwargs)
        with pytest.raises(taskorch.InvalidTask, match=field_name.replace(".", r"\.")):
            validated_options(
                "t", options["queue"], options["priority"], options["retry"], None, None
            )
    with pytest.raises(taskorch.InvalidTask, match="timeout"):
        validated_options("t", "default", "normal", None, -1, None)


class Payload(BaseModel):
    token: str
    count: int


def test_14_errors_carry_no_payload_values() -> None:
    with pytest.raises(ValidationError) as caught:
        Payload.model_validate({"token": "hunter2-secret", "count": "many"})
    record = error_record(caught.value, "InvalidPayload", ["hunter2-secret"])
    assert "hunter2" not in json.dumps(record)
    assert "count: Input should be a valid integer" in record["message"]
    try:
        raise PermissionError("token hunter2-secret refused")
    except PermissionError as e:
        record = error_record(e, "HandlerError", ["hunter2-secret"])
    assert "hunter2" not in json.dumps(record) and "[redacted]" in record["message"]
    assert "[redacted]" in record["traceback"]


def test_16_queue_sets_parse_strict_order_and_weights() -> None:
    assert QueueSet.parse("high, default") == QueueSet(("high", "default"))
    assert QueueSet.parse("a:3,b:1") == QueueSet(("a", "b"), (3, 1))
    for bad, message in [("a:3,b", "every queue a weight"), ("a,a", "twice"), ("A", "queue name")]:
        with pytest.raises(ValueError, match=message):
            QueueSet.parse(bad)


def test_16_weights_share_capacity_and_lead_in_proportion() -> None:
    qs = QueueSet.parse("a:3,b:1")
    assert (qs.share("a", 16), qs.share("b", 16)) == (12, 4)
    assert (qs.share("a", 1), qs.share("b", 1)) == (1, 1)  # each may take the one slot
    rng = random.Random(1)
    leads = Counter(qs.order(rng)[0] for _ in range(4000))
    assert 0.70 < leads["a"] / 4000 < 0.80  # weight 3 of 4
    strict = QueueSet.parse("a,b")
    assert strict.order(rng) == ["a", "b"] and strict.share("b", 16) == 16


@dataclass
class FlakyDeletes:
    """The API server refusing the first `failures` deletes (a 500, a timeout)."""

    failures: int
    calls: list[str] = field(default_factory=list)

    async def delete(self, plural: str, namespace: str, name: str, uid: str | None = None) -> None:
        self.calls.append(name)
        if len(self.calls) <= self.failures:
            raise ApiException(status=500, reason="etcdserver: request timed out")


async def test_17_ttl_deletion_is_retried_until_the_api_server_takes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("taskorch.controller.expiry.TTL_RETRY_FIRST_SECONDS", 0.01)
    kube = FlakyDeletes(failures=2)
    tracker = Tracker(None, kube, None)  # type: ignore[arg-type]
    body = {
        "metadata": {"uid": "u1", "namespace": "ns", "name": "done"},
        "spec": {"ttlSecondsAfterFinished": 0},
        "status": {"phase": "Succeeded", "completionTime": "2026-01-01T00:00:00Z"},
    }
    tracker.observe("MODIFIED", body)
    await asyncio.wait_for(asyncio.gather(*tracker.expiries.timers.values()), 5)
    assert kube.calls == ["done"] * 3


async def test_7_a_task_leaving_a_terminal_phase_loses_its_ttl_timer() -> None:
    tracker = Tracker(None, FlakyDeletes(0), None)  # type: ignore[arg-type]
    body: dict[str, Any] = {
        "metadata": {"uid": "u1", "namespace": "ns", "name": "revived"},
        "spec": {"ttlSecondsAfterFinished": 3600},
        "status": {"phase": "DeadLettered", "completionTime": "2026-01-01T00:00:00Z"},
    }
    tracker.observe("MODIFIED", body)
    timer = tracker.expiries.timers["u1"]
    body["status"] = {"phase": "Queued"}  # requeued from the DLQ
    tracker.observe("MODIFIED", body)
    await asyncio.sleep(0)
    assert "u1" not in tracker.expiries.timers and timer.cancelled()


def test_status_is_built_from_the_model() -> None:
    info = TaskInfo(
        id="u1",
        namespace="ns",
        queue="q",
        type="t",
        state=State.dead,
        attempt=2,
        failures=2,
        payload=None,
        error={"type": "RuntimeError", "reason": "MaxAttemptsExceeded", "message": "boom"},
        created_ms=1_000,
        finished_ms=61_000,
    )
    status = task_status(info, 3)
    assert TaskStatus.model_validate(status).phase is TaskPhase.DeadLettered
    assert status["lastError"]["reason"] == "MaxAttemptsExceeded"
    assert status["completionTime"] == "1970-01-01T00:01:01Z" and status["duration"] == "1m0s"
    assert "result" not in status and "nextRetryAt" not in status  # absent, never null
    dup = duplicate_status("k", "u0", "Task ns/first", 1, 5_000)
    assert dup["phase"] == "Skipped" and dup["taskId"] == "u0"
    assert cancelled_status(2, 5_000)["conditions"][0]["reason"] == "Cancelled"


def test_15_a_cluster_url_or_setting_gives_a_cluster_client() -> None:
    import redis.asyncio as aioredis

    assert isinstance(connect("redis://h:6379/0", Settings()), aioredis.Redis)
    cluster = connect("redis+cluster://h:7000", Settings())
    assert isinstance(cluster, aioredis.RedisCluster)
    assert isinstance(
        connect("redis://h:7000", Settings(redis_cluster=True)), aioredis.RedisCluster
    )


def test_handler_decorator_keeps_the_function_and_apps_compose() -> None:
    one, two = taskorch.App(), taskorch.App()

    @one.handler("add")
    def add(ctx: taskorch.Context, n: int) -> int:
        return n + 1

    @two.handler("sub")
    async def sub(ctx: taskorch.Context) -> None:
        return None

    assert add(None, 1) == 2  # type: ignore[arg-type]
    one.include(two)
    assert sorted(one.handlers) == ["add", "sub"]
    with pytest.raises(ValueError, match="twice"):
        one.handler("add")(add)


def test_14_redaction_catches_escaped_forms_and_survives_the_cut() -> None:
    pem = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----"
    try:
        raise KeyError(pem)  # str(KeyError) is the repr: newlines as \\n
    except KeyError as e:
        record = error_record(e, "HandlerError", [pem])
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" not in json.dumps(record)
    long_secret = "s" * 3000  # longer than the traceback tail: nothing of it may remain
    try:
        raise ValueError(f"bad token {long_secret}")
    except ValueError as e:
        record = error_record(e, "HandlerError", [long_secret])
    assert "sss" not in record["traceback"] and "sss" not in record["message"]
