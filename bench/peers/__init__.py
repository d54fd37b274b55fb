"""The peer task queues taskorch is measured against, one module each: bench/peers/<name>_app.py.

Every module has the same interface (the harness's drain and SDK runs use only this):
    CONFIG: str            the settings of the no-op run, one line
    CONFIG_IO: str         the settings of the 10 ms I/O run (BENCH_SLEEP_MS=10)
    enqueue(url, n)        n tasks of the handler, payload = i, no worker needed
    worker_commands(venv_bin, url, io) -> argv lists starting exactly 2 worker processes
The handler sleeps bench.common.SLEEP_S if > 0, then calls bench.common.task_done().
"""

from __future__ import annotations

import importlib
import types

PEERS = ["celery", "rq", "dramatiq", "arq", "streaq", "saq", "taskiq", "bullmq", "huey"]


def load(name: str) -> types.ModuleType:
    """The module of peer `name` (bench.peers.<name>_app)."""
    return importlib.import_module(f"{__name__}.{name}_app")


def same_redis(url: str, bound: str) -> None:
    """For the apps whose client is bound at import to BENCH_REDIS_URL: refuse another address."""
    if url.rstrip("/") != bound.rstrip("/"):
        raise ValueError(
            f"this app is bound to BENCH_REDIS_URL={bound!r} at import; enqueue got {url!r}"
        )
