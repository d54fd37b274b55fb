"""Worker processes against a real Redis, without Kubernetes: the SIGTERM drain the autoscaler
relies on, and the SDK path end to end."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import taskorch
from taskorch.queue.model import State
from tests.e2e.processes import start_worker
from tests.support import RedisServer, async_wait_for, wait_for

NS = "sdk-team"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[taskorch.Client]:
    async with taskorch.Client(redis_url, namespace=NS) as c:
        yield c


async def _state(client: taskorch.Client, task_id: str) -> State | None:
    info = await client.get(task_id)
    return info.state if info else None


async def test_sdk_enqueue_many_and_wait(
    client: taskorch.Client, redis_url: str, tmp_path: Path
) -> None:
    worker = start_worker(redis_url, NS, tmp_path / "worker.log", concurrency=8)
    try:
        payloads = [{"image_url": f"s3://b/{i}.png", "width": 10 + i} for i in range(50)]
        ids = await client.enqueue_many("process_image", payloads)
        assert len(set(ids)) == 50
        results = await asyncio.gather(*(client.wait(i, timeout=30) for i in ids))
        assert [r["thumbnail"] for r in results] == [
            f"s3://b/{i}.png.{10 + i}x256.jpg" for i in range(50)
        ]
        bad = await client.enqueue("process_image", {"width": -1})
        with pytest.raises(taskorch.TaskFailed, match="InvalidPayload"):
            await client.wait(bad, timeout=30)
    finally:
        worker.kill()


async def test_sigterm_drains_finishes_in_flight_and_releases_the_rest(
    client: taskorch.Client, redis_url: str, tmp_path: Path
) -> None:
    worker = start_worker(
        redis_url, NS, tmp_path / "draining.log", concurrency=4, args=("--grace", "1.5")
    )
    short = await client.enqueue("slow", {"seconds": 0.8})
    long = await client.enqueue("slow", {"seconds": 4})

    async def both_running() -> bool:
        return all([await _state(client, t) is State.active for t in (short, long)])

    await async_wait_for(both_running, timeout=30, what="both tasks running")
    assert worker.process is not None
    worker.process.terminate()
    wait_for(lambda: "draining" in worker.logs(), timeout=10, what="the worker to start draining")
    late = await client.enqueue("noop")  # must not be claimed by a draining worker

    exit_code = await asyncio.to_thread(worker.process.wait, 30)
    assert exit_code == 0, worker.logs()
    await client.wait(short, timeout=1)  # finished within the grace period, not released
    done = await client.get(short)
    assert done is not None and done.attempt == 1
    released = await client.get(long)
    assert released is not None and released.state is State.queued
    assert released.failures == 0, "a drain is not a handler failure"
    assert [h["outcome"] for h in released.history] == ["Released"]
    late_info = await client.get(late)
    assert late_info is not None and late_info.state is State.queued and late_info.attempt == 0

    # Another worker picks both up; the released one runs its second attempt in full.
    second = start_worker(redis_url, NS, tmp_path / "second.log")
    try:
        await client.wait(late, timeout=30)
        await client.wait(long, timeout=30)
        info = await client.get(long)
        assert info is not None and info.attempt == 2 and info.failures == 0
    finally:
        second.kill()


async def test_progress_is_visible_while_the_handler_runs(
    client: taskorch.Client, redis_url: str, tmp_path: Path
) -> None:
    # A 0.9 s lease: heartbeats, which carry progress, every 0.3 s.
    worker = start_worker(redis_url, NS, tmp_path / "w.log", TASKORCH_LEASE_SECONDS="0.9")
    try:
        task_id = await client.enqueue("steps", {"steps": 3, "seconds_each": 1.0})

        async def progress() -> object:
            info = await client.get(task_id)
            return info.progress if info and info.state is State.active else None

        seen = await async_wait_for(progress, timeout=20, what="progress while running")
        assert seen in ({"step": 1, "of": 3}, {"step": 2, "of": 3}, {"step": 3, "of": 3})
        assert await client.wait(task_id, timeout=20) == 3
    finally:
        worker.kill()


async def test_a_worker_with_a_hung_sync_handler_still_exits_on_sigterm(
    client: taskorch.Client, redis_url: str, tmp_path: Path
) -> None:
    worker = start_worker(redis_url, NS, tmp_path / "hung.log", args=("--grace", "1"))
    task_id = await client.enqueue("sleep_sync", {"seconds": 60}, timeout=0.3)

    async def timed_out() -> bool:
        info = await client.get(task_id)
        return info is not None and info.failures >= 1

    await async_wait_for(timed_out, timeout=30, what="the sync handler to time out")
    assert worker.process is not None
    worker.process.terminate()
    # Python would join the hung thread at exit (60 s); the worker must not wait for it.
    exit_code = await asyncio.to_thread(worker.process.wait, 20)
    assert exit_code == 0, worker.logs()
    assert "hung handler thread" in worker.logs()


async def test_a_worker_that_cannot_renew_its_leases_exits_non_zero(
    client: taskorch.Client, redis_url: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    worker = start_worker(redis_url, NS, tmp_path / "w.log", TASKORCH_LEASE_SECONDS="1")
    # a sync handler: its thread must not keep the stopped worker alive
    task_id = await client.enqueue("sleep_sync", {"seconds": 60})
    await async_wait_for(
        lambda: _is(client, task_id, State.active), timeout=30, what="the task to run"
    )
    redis_server.stop()  # the fixture starts it again for the next test
    assert worker.process is not None
    exit_code = await asyncio.to_thread(worker.process.wait, 30)
    assert exit_code == 1, worker.logs()
    assert "could not renew leases" in worker.logs() and "hung handler thread" in worker.logs()


async def _is(client: taskorch.Client, task_id: str, state: State) -> bool:
    return await _state(client, task_id) is state


def test_cli_queues_pause_resume(redis_url: str, tmp_path: Path) -> None:
    async def seed() -> None:
        async with taskorch.Client(redis_url, namespace=NS, queue="reports") as c:
            await c.enqueue_many("noop", [None] * 3)

    asyncio.run(seed())

    # No cluster to ask (whatever ~/.kube/config the machine has): the queue lives in Redis only.
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")}

    def cli(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "taskorch.cli", *args, "--redis-url", redis_url],
            capture_output=True,
            text=True,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    cli("pause", "-n", NS, "reports")
    [row] = json.loads(cli("queues", "-o", "json"))
    assert (row["namespace"], row["queue"], row["ready"], row["paused"]) == (
        NS,
        "reports",
        3,
        True,
    )
    assert row["oldest_ready_age_s"] is not None
    table = cli("queues")
    assert table.split("\n")[1].split()[:3] == [NS, "reports", "3"]
    cli("resume", "-n", NS, "reports")
    assert json.loads(cli("queues", "-o", "json"))[0]["paused"] is False
