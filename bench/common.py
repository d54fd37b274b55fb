"""What every system's handler does: nothing but count its completion (the same cost for all).

The count is kept in the worker process's memory and a thread adds it to one Redis counter
every few milliseconds. An INCR per task (the bench's first method) was a Redis round trip per
task inside the handler: for the fastest workers it was a third of their CPU and most of what
the drain measured, so the "no-op" figure compared handlers doing I/O, not workers."""

from __future__ import annotations

import os
import threading
import time

import redis

DONE_KEY = "bench:done"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0")
# The handler's simulated I/O: the harness sets BENCH_SLEEP_MS=10 for the I/O runs (0 = no-op).
SLEEP_S = float(os.environ.get("BENCH_SLEEP_MS", "0")) / 1000
# How often each worker process adds its completions to DONE_KEY: the drain's clock reads it,
# so this bounds its error (5 ms of a 20,000-task drain that lasts ~0.8 s at 26k tasks/s).
FLUSH_S = 0.005

_lock = threading.Lock()
_done = 0
_reporting_pid = 0


def task_done() -> None:
    """Count one completed task. Safe from threads; in a forked child, counting starts anew."""
    global _done, _reporting_pid
    with _lock:
        if _reporting_pid != os.getpid():  # the first task in this process (or after a fork)
            _reporting_pid, _done = os.getpid(), 0
            threading.Thread(target=_report, name="bench-done", daemon=True).start()
        _done += 1


def _report() -> None:
    r = redis.Redis.from_url(REDIS_URL)
    sent = 0
    while True:
        time.sleep(FLUSH_S)
        done = _done
        if done != sent:
            r.incrby(DONE_KEY, done - sent)
            sent = done
