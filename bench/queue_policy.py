"""Queue policy benchmarks (issue: TaskQueue and Schedule):

- drain rate with concurrency keys in use (1,000 keys, maxConcurrent 1) against plain tasks, in
  the same run, as a ratio: 2 worker processes × concurrency 16 drain a queue filled while
  paused, timed from resume to the last completion;
- rate-limit accuracy: a queue limited to R starts a second, drained by 2 worker processes;
  the starts counted over 10 s after the first second (the saved-up burst), as a ratio to R.
Each measurement is repeated to show the spread.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from bench.common import DONE_KEY
from bench.sdk import VENV_BIN, start_workers, stop_all, wait_done
from taskorch.queue.broker import Broker
from taskorch.queue.model import TaskRef, TaskRequest
from taskorch.queue.policy import QueuePolicy

NS, QUEUE = "bench", "default"


def _workers(url: str, logdir: Path, tag: str) -> list[subprocess.Popen[bytes]]:
    cmd = [
        str(VENV_BIN / "taskorch"),
        "worker",
        "--app",
        "bench.taskorch_app:app",
        "-c",
        "16",
        "-n",
        NS,
    ]
    return start_workers([cmd, cmd], url, logdir, tag)


async def _enqueue(url: str, requests: list[TaskRequest]) -> list[str]:
    broker = Broker.from_url(url)
    try:
        ids: list[str] = []
        for i in range(0, len(requests), 1000):
            ids += await broker.enqueue_many(NS, QUEUE, requests[i : i + 1000])
        return ids
    finally:
        await broker.close()


async def _policy(url: str, policy: QueuePolicy | None, paused: bool | None = None) -> None:
    broker = Broker.from_url(url)
    try:
        if paused is None:
            await broker.configure(NS, QUEUE, policy)
        elif paused:
            await broker.pause(NS, QUEUE)
        else:
            await broker.resume(NS, QUEUE)
    finally:
        await broker.close()


def _drain(url: str, n: int, keys: int, logdir: Path) -> float:
    """Seconds from resume to the last of n tasks done."""
    r = redis.Redis.from_url(url)
    r.flushall()
    procs = _workers(url, logdir, f"keys-{keys}")
    try:
        asyncio.run(_enqueue(url, [TaskRequest("noop")]))  # warm-up: the workers are up
        wait_done(r, 1, 120)
        r.set(DONE_KEY, 0)
        asyncio.run(_policy(url, None, paused=True))
        requests = [
            TaskRequest("noop", payload=i, concurrency_key=f"k{i % keys}" if keys else "")
            for i in range(n)
        ]
        asyncio.run(_enqueue(url, requests))
        t0 = time.perf_counter()
        asyncio.run(_policy(url, None, paused=False))
        return wait_done(r, n, 600) - t0
    finally:
        stop_all(procs)


def keys_vs_plain(
    url: str, logdir: Path, n: int = 20_000, keys: int = 1000, repeats: int = 3
) -> dict[str, Any]:
    plain, keyed = [], []
    for _ in range(repeats):  # alternated, so drift hits both alike
        plain.append(_drain(url, n, 0, logdir))
        keyed.append(_drain(url, n, keys, logdir))
    ratios = sorted(p / k for p, k in zip(plain, keyed, strict=True))
    return {
        "tasks": n,
        "keys": keys,
        "plain_tasks_per_s": [round(n / s) for s in plain],
        "keyed_tasks_per_s": [round(n / s) for s in keyed],
        "keyed_vs_plain": round(statistics.median(ratios), 2),
        "keyed_vs_plain_range": [round(ratios[0], 2), round(ratios[-1], 2)],
    }


def _rate_once(url: str, rate: int, logdir: Path) -> float:
    r = redis.Redis.from_url(url)
    r.flushall()
    procs = _workers(url, logdir, "rate")
    try:
        asyncio.run(_enqueue(url, [TaskRequest("noop")]))
        wait_done(r, 1, 120)
        r.set(DONE_KEY, 0)
        asyncio.run(_policy(url, QueuePolicy(rate_tasks=rate, rate_per_seconds=1)))
        n = rate * 12
        ids = asyncio.run(_enqueue(url, [TaskRequest("noop") for _ in range(n)]))
        wait_done(r, n, 120)

        async def starts() -> list[int]:
            broker = Broker.from_url(url)
            try:
                infos = await broker.get_many([TaskRef(NS, QUEUE, i) for i in ids])
                return sorted(i.started_ms for i in infos if i and i.started_ms)
            finally:
                await broker.close()

        started = asyncio.run(starts())
    finally:
        stop_all(procs)
    window = started[0] + 1000
    return len([s for s in started if window <= s < window + 10_000]) / 10 / rate


def rate_limit_accuracy(
    url: str, logdir: Path, rate: int = 200, repeats: int = 3
) -> dict[str, Any]:
    measured = [_rate_once(url, rate, logdir) for _ in range(repeats)]
    return {
        "limit_per_s": rate,
        "measured_vs_limit": [round(m, 3) for m in measured],
    }
