"""SDK-path benchmark: taskorch vs Celery, RQ, Dramatiq and arq on one Redis, one run, as ratios.

Each system gets 2 worker processes and a no-op handler that INCRs a counter; the harness
starts the workers, proves they are up with one warm-up task, then enqueues N tasks and times
enqueue-start → last completion. Also: taskorch's batched enqueue rate from one process, and its
idle pickup latency (enqueue → handler start).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.common import DONE_KEY

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@dataclass
class System:
    name: str
    workers: list[list[str]]
    enqueue: Callable[[str, int], None]
    config: str


def _taskorch_enqueue(url: str, n: int) -> None:
    import taskorch

    async def go() -> None:
        async with taskorch.Client(url, namespace="bench") as c:
            await c.enqueue_many("noop", range(n), batch_size=1000)

    asyncio.run(go())


def _celery_enqueue(url: str, n: int) -> None:
    from bench.peers.celery_app import noop

    for i in range(n):
        noop.delay(i)


def _rq_enqueue(url: str, n: int) -> None:
    from rq import Queue

    from bench.peers.rq_app import noop

    q = Queue("default", connection=redis.Redis.from_url(url))
    for start in range(0, n, 1000):
        q.enqueue_many([Queue.prepare_data(noop, args=(i,)) for i in range(start, min(n, start + 1000))])


def _dramatiq_enqueue(url: str, n: int) -> None:
    from bench.peers.dramatiq_app import noop

    for i in range(n):
        noop.send(i)


def _arq_enqueue(url: str, n: int) -> None:
    from arq import create_pool
    from arq.connections import RedisSettings

    async def go() -> None:
        pool = await create_pool(RedisSettings.from_dsn(url))
        for start in range(0, n, 1000):
            await asyncio.gather(*(pool.enqueue_job("noop", i) for i in range(start, min(n, start + 1000))))
        await pool.aclose()

    asyncio.run(go())


def systems(url: str) -> list[System]:
    b = VENV_BIN
    two = lambda cmd: [cmd, cmd]  # noqa: E731
    return [
        System(
            "taskorch",
            two([str(b / "taskorch"), "worker", "--app", "bench.taskorch_app:app", "-c", "16", "-n", "bench"]),
            _taskorch_enqueue,
            "2 processes × concurrency 16, batched enqueue (1000/round trip)",
        ),
        System(
            "celery",
            two([str(b / "celery"), "-A", "bench.peers.celery_app", "worker", "-P", "solo", "-l", "warning"]),
            _celery_enqueue,
            "2 processes, solo pool (fastest for no-op), delay() per task",
        ),
        System(
            "rq",
            two([str(b / "rq"), "worker", "-w", "rq.worker.SimpleWorker", "--url", url, "-q"]),
            _rq_enqueue,
            "2 SimpleWorker processes (no fork per job), enqueue_many (1000/pipeline)",
        ),
        System(
            "dramatiq",
            [[str(b / "dramatiq"), "bench.peers.dramatiq_app", "--processes", "2", "--threads", "8"]],
            _dramatiq_enqueue,
            "2 processes × 8 threads, send() per task",
        ),
        System(
            "arq",
            two([str(b / "arq"), "bench.peers.arq_app.WorkerSettings"]),
            _arq_enqueue,
            "2 processes × max_jobs 16, enqueue_job gathered 1000 at a time",
        ),
    ]


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


def run_system(s: System, url: str, n: int, logdir: Path) -> dict[str, Any]:
    r = redis.Redis.from_url(url)
    r.flushall()
    env = {"PYTHONPATH": str(REPO), "BENCH_REDIS_URL": url, "TASKORCH_REDIS_URL": url, "PATH": str(VENV_BIN)}
    procs = [
        subprocess.Popen(cmd, cwd=REPO, env=env, stdout=(logdir / f"{s.name}-{i}.log").open("w"), stderr=subprocess.STDOUT)
        for i, cmd in enumerate(s.workers)
    ]
    try:
        s.enqueue(url, 1)  # warm-up: the workers are up when it is done
        wait_done(r, 1, 120)
        r.set(DONE_KEY, 0)
        t0 = time.perf_counter()
        s.enqueue(url, n)
        t_enq = time.perf_counter()
        t1 = wait_done(r, n, 600)
    finally:
        stop_all(procs)
    return {
        "system": s.name,
        "config": s.config,
        "tasks": n,
        "enqueue_s": round(t_enq - t0, 3),
        "end_to_end_s": round(t1 - t0, 3),
        "tasks_per_s": round(n / (t1 - t0)),
    }


def taskorch_batched_enqueue(url: str, n: int) -> dict[str, Any]:
    redis.Redis.from_url(url).flushall()
    t0 = time.perf_counter()
    _taskorch_enqueue(url, n)
    dt = time.perf_counter() - t0
    return {"tasks": n, "seconds": round(dt, 3), "tasks_per_s": round(n / dt)}


def taskorch_idle_latency(url: str, samples: int, logdir: Path) -> dict[str, Any]:
    import taskorch

    r = redis.Redis.from_url(url)
    r.flushall()
    env = {"PYTHONPATH": str(REPO), "BENCH_REDIS_URL": url, "TASKORCH_REDIS_URL": url, "PATH": str(VENV_BIN)}
    cmd = [str(VENV_BIN / "taskorch"), "worker", "--app", "bench.taskorch_app:app", "-c", "16", "-n", "bench"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=(logdir / "latency.log").open("w"), stderr=subprocess.STDOUT)

    async def go() -> list[float]:
        async with taskorch.Client(url, namespace="bench") as c:
            for i in range(samples + 1):
                await c.enqueue("latency", {"sent": time.time()})
                deadline = time.monotonic() + 30
                while r.llen("bench:latency") < i + 1:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"latency sample {i} never ran; see {logdir}/latency.log")
                    await asyncio.sleep(0.001)
                await asyncio.sleep(0.02)  # let the worker go idle (blocked on its marker) again
        return [float(x) for x in r.lrange("bench:latency", 1, -1)]  # the first one warms up

    try:
        lat = sorted(asyncio.run(go()))
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    q = statistics.quantiles(lat, n=100)
    return {"samples": len(lat), "p50_ms": round(q[49] * 1000, 2), "p99_ms": round(q[98] * 1000, 2)}
