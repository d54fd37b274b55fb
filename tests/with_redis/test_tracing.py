"""Tracing across processes: an SDK process enqueues, a worker process runs; both export over
OTLP to a receiver in the test, and one task's spans, from enqueue through claim, handler and
settle, share one trace id. And the worker's JSON logs carry the task id and trace id."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.processes import Proc, base_env
from tests.support import OtlpReceiver, Span, wait_for

NS = "team-t"
SDK_SCRIPT = """
import asyncio, json, sys
import taskorch
from taskorch import tracing

async def main():
    async with taskorch.Client(sys.argv[1], namespace=sys.argv[2]) as client:
        ok = await client.enqueue("square", {"value": 3})
        bad = await client.enqueue("always_fail", None, retry={"maxAttempts": 1})
        logged = await client.enqueue("log_line")
        synced = await client.enqueue("log_line_sync")
        print(json.dumps({"ok": ok, "bad": bad, "logged": logged, "sync": synced}), flush=True)
        assert await client.wait(ok, timeout=30) == 9
        await client.wait(logged, timeout=30)
        await client.wait(synced, timeout=30)

asyncio.run(main())
tracing.shutdown()
"""


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.close()


def test_one_task_is_one_trace_across_the_sdk_and_the_worker(
    redis_url: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    worker_env = {**receiver.env("worker"), "TASKORCH_LOG_FORMAT": "json"}
    worker = Proc(
        ["worker", "--app", "tests.e2e.handlers:app", "-n", NS, "-c", "4"],
        base_env(redis_url, None, worker_env),
        tmp_path / "worker.log",
    ).start()
    try:
        sdk = subprocess.run(
            [sys.executable, "-c", SDK_SCRIPT, redis_url, NS],
            env=base_env(redis_url, None, receiver.env("sdk")),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert sdk.returncode == 0, sdk.stderr
        ids = json.loads(sdk.stdout.splitlines()[0])

        def attempt_spans(task_id: str) -> list[Span] | None:
            spans = [s for s in receiver.spans if s.attributes.get("taskorch.task.id") == task_id]
            return (
                spans if {"taskorch.claim", "taskorch.settle"} <= {s.name for s in spans} else None
            )

        ok_spans = wait_for(lambda: attempt_spans(ids["ok"]), timeout=30, what="the worker's spans")
        by_name = {s.name: s for s in ok_spans}
        assert set(by_name) == {"taskorch.claim", "taskorch.run square", "taskorch.settle"}
        assert {s.service for s in ok_spans} == {"worker"}
        [trace_id] = {s.trace_id for s in ok_spans}
        # The SDK's enqueue span is the parent of its task's claim and run, in the same trace.
        [enqueue] = [
            s for s in receiver.named("taskorch.enqueue default") if s.trace_id == trace_id
        ]
        assert enqueue.service == "sdk"
        assert enqueue.attributes["messaging.destination.name"] == "default"
        assert by_name["taskorch.claim"].parent_id == enqueue.span_id
        assert by_name["taskorch.run square"].parent_id == enqueue.span_id
        assert by_name["taskorch.settle"].parent_id == by_name["taskorch.run square"].span_id
        assert by_name["taskorch.run square"].error is None

        def failed_run() -> Span | None:
            return next(
                (
                    s
                    for s in receiver.named("taskorch.run always_fail")
                    if s.attributes.get("taskorch.task.id") == ids["bad"]
                ),
                None,
            )

        bad_run = wait_for(failed_run, timeout=30, what="the failing task's run span")
        assert bad_run.error and "this handler always fails" in bad_run.error
        assert bad_run.trace_id != trace_id  # another task, another trace

        # The handler's own log line, as JSON, names its task and its trace.
        def handler_line(text: str = "hello from the handler") -> dict[str, str] | None:
            for line in worker.logs().splitlines():
                if text in line:
                    return json.loads(line)  # type: ignore[no-any-return]
            return None

        record = wait_for(handler_line, timeout=30, what="the handler's log line")
        # a sync handler runs in a thread: the attempt's context goes with it
        synced = wait_for(
            lambda: handler_line("hello from the sync handler"), timeout=30, what="sync line"
        )
        assert synced["task_id"] == ids["sync"] and len(synced["trace_id"]) == 32
        logged_run = wait_for(
            lambda: next(
                (
                    s
                    for s in receiver.named("taskorch.run log_line")
                    if s.attributes.get("taskorch.task.id") == ids["logged"]
                ),
                None,
            ),
            timeout=30,
            what="log_line's run span",
        )
        assert record["task_id"] == ids["logged"]
        assert record["trace_id"] == logged_run.trace_id
        assert (record["level"], record["logger"]) == ("WARNING", "handlers")
    finally:
        worker.stop()


def test_tracing_is_off_without_an_endpoint(redis_url: str, tmp_path: Path) -> None:
    """No OTLP endpoint: tasks carry no trace context (nothing stored, nothing exported)."""
    import asyncio

    import redis

    import taskorch
    from taskorch import tracing

    async def enqueue() -> str:
        async with taskorch.Client(redis_url, namespace=NS) as client:
            return await client.enqueue("square", {"value": 1})

    task_id = asyncio.run(enqueue())
    assert not tracing.enabled()
    fields = redis.Redis.from_url(redis_url).hgetall(f"taskorch:{{{NS}/default}}:t:{task_id}")
    assert b"tp" not in fields
