"""What every system's no-op handler does: count its completion in Redis (the same cost for all)."""

from __future__ import annotations

import os

DONE_KEY = "bench:done"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0")
