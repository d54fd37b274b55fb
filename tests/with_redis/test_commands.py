"""Command tasks on real worker processes and a real redis-server: output in the result, exit
codes as failed attempts, the process group killed on cancel, the allow-list, workers that do not
allow commands, a worker's secrets kept out of the command, and seed 004's kill -9 demo."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskorch.api.task import TaskSpec, runnable
from taskorch.queue.broker import Broker
from taskorch.queue.model import TaskInfo, TaskRequest
from tests.e2e.processes import Proc, base_env
from tests.support import broker_call, wait_for

NS = "cmd"


@pytest.fixture
def start_worker(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(*args: str, **env: str) -> Proc:
        proc = Proc(
            ["worker", "--app", "tests.e2e.handlers:app", "-n", NS, "-c", "4", *args],
            # a 1.5 s lease: heartbeats (and so cancels) every 0.5 s
            base_env(redis_url, None, {"TASKORCH_LEASE_SECONDS": "1.5", **env}),
            tmp_path / f"worker-{len(started)}.log",
        ).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def enqueue(redis_url: str, spec: dict[str, Any]) -> str:
    task = TaskSpec.model_validate(spec)
    type_, payload = runnable(task)
    retry = task.retry.model_dump(by_alias=True, exclude_none=True) if task.retry else None
    request = TaskRequest(type=type_, payload=payload, retry=retry)
    [task_id] = broker_call(redis_url, lambda b: b.enqueue_many(NS, "default", [request]))
    return str(task_id)


def get(redis_url: str, task_id: str) -> TaskInfo:
    info = broker_call(redis_url, lambda b: Broker.get(b, NS, "default", task_id))
    assert info is not None
    return info  # type: ignore[no-any-return]


def ended(redis_url: str, task_id: str, timeout: float = 30) -> TaskInfo:
    return wait_for(
        lambda: (i := get(redis_url, task_id)).state in ("succeeded", "dead", "cancelled") and i,
        timeout=timeout,
        what=f"task {task_id} to end",
    )


def pids_running(marker: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_the_sdk_enqueues_a_command_and_waits_for_its_output(
    redis_url: str, start_worker: Callable[..., Proc]
) -> None:
    import asyncio

    import taskorch

    start_worker("--allow-commands", "sh")

    async def run() -> Any:
        async with taskorch.Client(redis_url, namespace=NS) as client:
            with pytest.raises(taskorch.InvalidTask, match="command"):
                await client.enqueue_command([])
            task_id = await client.enqueue_command(
                ["sh", "-c", "echo $WHO; pwd"], env={"WHO": "sdk"}, working_dir="/tmp"
            )
            return await client.wait(task_id, timeout=30)

    assert asyncio.run(run()) == {"exitCode": 0, "stdout": "sdk\n/tmp\n", "stderr": ""}


def test_echo_succeeds_with_its_output_and_no_secret_of_the_worker(
    redis_url: str, start_worker: Callable[..., Proc]
) -> None:
    start_worker("--allow-commands", "echo,sh", TASKORCH_REDIS_PASSWORD="s3cret")
    task_id = enqueue(redis_url, {"command": ["echo", "Hello from worker"]})
    info = ended(redis_url, task_id)
    assert info.state == "succeeded"
    assert info.result == {"exitCode": 0, "stdout": "Hello from worker\n", "stderr": ""}
    leak = enqueue(
        redis_url,
        {
            "command": [
                "sh",
                "-c",
                'echo "[$TASKORCH_REDIS_PASSWORD$TASKORCH_REDIS_URL] $GREETING"',
            ],
            "env": [{"name": "GREETING", "value": "hi"}],
        },
    )
    assert ended(redis_url, leak).result["stdout"] == "[] hi\n"


def test_a_non_zero_exit_is_retried_then_dead_lettered_with_the_code_and_stderr(
    redis_url: str, start_worker: Callable[..., Proc]
) -> None:
    start_worker("--allow-commands", "sh")
    task_id = enqueue(
        redis_url,
        {
            "command": ["sh", "-c", "echo 'disk full' >&2; exit 3"],
            "retry": {"maxAttempts": 2, "initialDelay": "100ms", "jitter": False},
        },
    )
    info = ended(redis_url, task_id)
    assert (info.state, info.attempt) == ("dead", 2)
    assert info.error is not None
    assert info.error["reason"] == "MaxAttemptsExceeded"
    assert "exit code 3; stderr: disk full" in info.error["message"]
    assert [h["outcome"] for h in info.history] == ["Failed", "Failed"]


def test_a_cancelled_command_loses_its_whole_process_group(
    redis_url: str, start_worker: Callable[..., Proc]
) -> None:
    start_worker("--allow-commands", "sh")
    marker = f"sleep 30.{os.getpid()}"
    # A shell with a background child and a foreground one: both in the command's group.
    task_id = enqueue(redis_url, {"command": ["sh", "-c", f"{marker}1 & {marker}2; wait"]})
    # the shell and both sleeps (each names the marker)
    wait_for(lambda: len(pids_running(marker)) == 3, timeout=30, what="both sleeps running")
    broker_call(redis_url, lambda b: b.cancel(NS, "default", task_id))
    info = ended(redis_url, task_id)
    cancelled_at = time.monotonic()
    assert info.state == "cancelled"
    wait_for(lambda: not pids_running(marker), timeout=1.0, what="the process group gone")
    assert time.monotonic() - cancelled_at < 1.0


def test_a_worker_without_allow_commands_never_runs_one(
    redis_url: str, start_worker: Callable[..., Proc], tmp_path: Path
) -> None:
    start_worker()
    ran = tmp_path / "ran"
    task_id = enqueue(redis_url, {"command": ["touch", str(ran)]})
    wait_for(
        lambda: any(h.get("outcome") == "Refused" for h in get(redis_url, task_id).history),
        timeout=30,
        what="the task handed back",
    )
    assert not ran.exists()
    assert get(redis_url, task_id).state in ("queued", "scheduled")


def test_an_executable_outside_the_allow_list_is_refused_naming_it(
    redis_url: str, start_worker: Callable[..., Proc], tmp_path: Path
) -> None:
    start_worker("--allow-commands", "echo,sleep")
    victim = tmp_path / "keep"
    victim.write_text("x")
    task_id = enqueue(redis_url, {"command": ["rm", str(victim)]})
    info = ended(redis_url, task_id)
    assert (info.state, info.attempt) == ("dead", 1)  # at once: no retry
    assert info.error is not None and info.error["reason"] == "CommandNotAllowed"
    assert "'rm' is not in this worker's --allow-commands (echo, sleep)" in info.error["message"]
    assert victim.exists()
    # a path is matched exactly: `echo` on the list does not admit another echo
    other = enqueue(redis_url, {"command": [str(tmp_path / "echo")]})
    assert ended(redis_url, other).error["reason"] == "CommandNotAllowed"  # type: ignore[index]


@pytest.mark.slow
def test_seed_004_a_killed_workers_command_completes_on_another(
    redis_url: str, start_worker: Callable[..., Proc]
) -> None:
    first = start_worker("--allow-commands", "sleep")
    task_id = enqueue(redis_url, {"command": ["sleep", "20"]})
    wait_for(lambda: get(redis_url, task_id).state == "active", timeout=30, what="it runs")
    assert first.process is not None
    first.kill()  # kill -9: no drain, the lease expires
    start_worker("--allow-commands", "sleep")
    info = ended(redis_url, task_id, timeout=60)
    assert info.state == "succeeded" and info.attempt == 2
    assert [h["outcome"] for h in info.history] == ["LostWorker", "Succeeded"]
