"""Drain: the worker's speed alone. The queue is pre-filled with N tasks while no worker runs;
then 2 worker processes start, and the rate is timed from 1 % to 100 % done, so start-up and
enqueue are excluded. Also measured over the same window: Redis CPU (INFO cpu) and the worker
processes' CPU (/proc, children included), each per task.

Every system is a module with the same interface (bench/taskorch_app.py, bench/peers/*_app.py):
CONFIG, CONFIG_IO, enqueue(url, n), worker_commands(venv_bin, url, io)."""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import redis

from bench.common import DONE_KEY
from bench.sdk import VENV_BIN, start_workers, stop_all

TICKS = os.sysconf("SC_CLK_TCK")


def _tree_cpu_seconds(root: int) -> float:
    """User + system CPU of `root` and its descendants (dramatiq and huey fork workers)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / TICKS
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(p, 0.0) for p in tree)


def _redis_cpu_seconds(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def drain_once(
    name: str, system: ModuleType, url: str, n: int, io: bool, logdir: Path
) -> dict[str, Any]:
    r = redis.Redis.from_url(url)
    r.flushall()
    system.enqueue(url, n)
    first = max(1, n // 100)
    commands = system.worker_commands(VENV_BIN, url, io)
    procs = start_workers(commands, url, logdir, f"drain-{name}", io)
    try:
        deadline = time.perf_counter() + 600
        t1 = None
        while True:
            done = int(r.get(DONE_KEY) or 0)
            now = time.perf_counter()
            if t1 is None and done >= first:
                t1, cpu1 = (
                    now,
                    (_redis_cpu_seconds(r), sum(_tree_cpu_seconds(p.pid) for p in procs)),
                )
            if done >= n:
                break
            if now > deadline:
                raise TimeoutError(f"{name}: only {done} of {n} done; see {logdir}")
            time.sleep(0.002)
        t100 = now
        redis_cpu = _redis_cpu_seconds(r) - cpu1[0]
        worker_cpu = sum(_tree_cpu_seconds(p.pid) for p in procs) - cpu1[1]
    finally:
        stop_all(procs)
    timed = n - first
    return {
        "tasks_per_s": round(timed / (t100 - t1)),
        "redis_cpu_us_per_task": round(redis_cpu / timed * 1e6, 1),
        "worker_cpu_us_per_task": round(worker_cpu / timed * 1e6, 1),
    }


def drain(
    name: str, system: ModuleType, url: str, n: int, io: bool, logdir: Path, repeats: int = 3
) -> dict[str, Any]:
    """`repeats` drains of one system: min / median / max of each figure."""
    runs = [drain_once(name, system, url, n, io, logdir) for _ in range(repeats)]
    return summary(name, system, n, io, runs)


def drain_rounds(
    systems: list[tuple[str, ModuleType]],
    url: str,
    n: int,
    io: bool,
    logdir: Path,
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """Every system once per round, `repeats` rounds: a machine whose speed drifts over the
    minutes (a shared 2-core VM does) then weighs on every system alike, not on whichever ran
    in the slow minutes."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in systems}
    for round_ in range(repeats):
        for name, module in systems:
            print(f"  round {round_ + 1}/{repeats}: {name} ...", flush=True)
            runs[name].append(drain_once(name, module, url, n, io, logdir))
    return [summary(name, module, n, io, runs[name]) for name, module in systems]


def summary(
    name: str, system: ModuleType, n: int, io: bool, runs: list[dict[str, Any]]
) -> dict[str, Any]:
    rates = [run["tasks_per_s"] for run in runs]
    return {
        "system": name,
        "config": system.CONFIG_IO if io else system.CONFIG,
        "tasks": n,
        "handler": "10 ms I/O" if io else "no-op",
        "tasks_per_s": {"min": min(rates), "median": statistics.median(rates), "max": max(rates)},
        "redis_cpu_us_per_task": statistics.median(r["redis_cpu_us_per_task"] for r in runs),
        "worker_cpu_us_per_task": statistics.median(r["worker_cpu_us_per_task"] for r in runs),
        "runs": runs,
    }


if __name__ == "__main__":  # one system by hand: python -m bench.drain taskorch 20000 [io]
    import importlib

    from tests.support import RedisServer

    target = sys.argv[1]
    module = importlib.import_module(
        "bench.taskorch_app" if target == "taskorch" else f"bench.peers.{target}_app"
    )
    logs = Path("/tmp/taskorch-drain")
    logs.mkdir(exist_ok=True)
    server = RedisServer(logs / "redis", port=6399)
    server.start()
    try:
        if os.environ.get("BENCH_APPENDONLY") == "no":
            redis.Redis.from_url(server.url).config_set("appendonly", "no")
        io_run = len(sys.argv) > 3 and sys.argv[3] == "io"
        print(drain(target, module, server.url, int(sys.argv[2]), io_run, logs, repeats=1))
    finally:
        server.stop()
