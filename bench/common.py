"""What every system's no-op handler does: count its completion in Redis (the same cost for all)."""

from __future__ import annotations

import os

DONE_KEY = "bench:done"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0")
# The handler's simulated I/O: the harness sets BENCH_SLEEP_MS=10 for the I/O runs (0 = no-op).
SLEEP_S = float(os.environ.get("BENCH_SLEEP_MS", "0")) / 1000
