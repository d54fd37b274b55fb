"""SDK path end to end: taskorch vs the peers (bench/peers) on one Redis, as ratios.

Each system gets 2 worker processes and a no-op handler that counts its completion
(bench/common.py); the harness starts the workers, proves they are up with one warm-up task,
then enqueues N tasks and times enqueue-start → last completion (bench/drain.py times the
workers alone). Also: taskorch's batched enqueue rate from one process, and its idle pickup
latency (enqueue → handler start).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import redis

from bench import peers, taskorch_app
from bench.common import DONE_KEY

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def systems() -> list[tuple[str, ModuleType]]:
    """taskorch and every peer, each a module with the same interface (bench/peers/__init__.py)."""
    return [("taskorch", taskorch_app), *((name, peers.load(name)) for name in peers.PEERS)]


def worker_env(url: str, io: bool = False) -> dict[str, str]:
    return {
        "PYTHONPATH": str(REPO),
        "BENCH_REDIS_URL": url,
        "TASKORCH_REDIS_URL": url,
        "PATH": str(VENV_BIN),
        "BENCH_SLEEP_MS": "10" if io else "0",
    }


def wait_done(r: redis.Redis, n: int, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if int(r.get(DONE_KEY) or 0) >= n:
            return time.perf_counter()
        time.sleep(0.002)
    raise TimeoutError(f"only {r.get(DONE_KEY)} of {n} done after {timeout}s")


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every worker, then wait (SIGKILL after 15 s)."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def start_workers(
    commands: list[list[str]], url: str, logdir: Path, tag: str, io: bool = False
) -> list[subprocess.Popen[bytes]]:
    """Start a system's worker processes, each logging to `<logdir>/<tag>-<i>.log`."""
    return [
        subprocess.Popen(
            cmd,
            cwd=REPO,
            env=worker_env(url, io),
            stdout=(logdir / f"{tag}-{i}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for i, cmd in enumerate(commands)
    ]


def run_system(name: str, system: ModuleType, url: str, n: int, logdir: Path) -> dict[str, Any]:
    """End to end: the workers are up (proved by one warm-up task), then N tasks are enqueued
    through the system's usual API and timed from the first enqueue to the last completion."""
    r = redis.Redis.from_url(url)
    r.flushall()
    procs = start_workers(system.worker_commands(VENV_BIN, url, False), url, logdir, name)
    try:
        system.enqueue(url, 1)  # warm-up: the workers are up when it is done
        wait_done(r, 1, 120)
        r.set(DONE_KEY, 0)
        t0 = time.perf_counter()
        system.enqueue(url, n)
        t_enq = time.perf_counter()
        t1 = wait_done(r, n, 600)
    finally:
        stop_all(procs)
    return {
        "system": name,
        "config": system.CONFIG,
        "tasks": n,
        "enqueue_s": round(t_enq - t0, 3),
        "end_to_end_s": round(t1 - t0, 3),
        "tasks_per_s": round(n / (t1 - t0)),
    }


def taskorch_batched_enqueue(url: str, n: int) -> dict[str, Any]:
    redis.Redis.from_url(url).flushall()
    t0 = time.perf_counter()
    taskorch_app.enqueue(url, n)
    dt = time.perf_counter() - t0
    return {"tasks": n, "seconds": round(dt, 3), "tasks_per_s": round(n / dt)}


def taskorch_idle_latency(url: str, samples: int, logdir: Path) -> dict[str, Any]:
    import taskorch

    r = redis.Redis.from_url(url)
    r.flushall()
    [cmd, _] = taskorch_app.worker_commands(VENV_BIN, url, False)
    procs = start_workers([cmd], url, logdir, "latency")

    async def go() -> list[float]:
        async with taskorch.Client(url, namespace="bench") as c:
            for i in range(samples + 1):
                await c.enqueue("latency", {"sent": time.time()})
                deadline = time.monotonic() + 30
                while r.llen("bench:latency") < i + 1:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"latency sample {i} never ran; see {logdir}/latency-0.log"
                        )
                    await asyncio.sleep(0.001)
                await asyncio.sleep(0.02)  # let the worker go idle (blocked on its marker) again
        return [float(x) for x in r.lrange("bench:latency", 1, -1)]  # the first one warms up

    try:
        lat = sorted(asyncio.run(go()))
    finally:
        stop_all(procs)
    q = statistics.quantiles(lat, n=100)
    return {"samples": len(lat), "p50_ms": round(q[49] * 1000, 2), "p99_ms": round(q[98] * 1000, 2)}
