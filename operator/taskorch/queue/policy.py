"""A queue's policy (DESIGN §4 TaskQueue, §5 `config`): what the operator writes into the queue's
Redis `config` hash from its TaskQueue, and the defaults every script falls back on. Queue policy
lives there, in one place, not in each worker's or client's environment."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    paused: bool = False
    rate_tasks: int = 0  # claims allowed per `rate_per_seconds`; 0: no rate limit
    rate_per_seconds: float = 0.0
    max_concurrent: int = 0  # running at once across all workers; 0: no cap
    max_recoveries: int = 3  # lost-worker recoveries per task before it is dead-lettered
    dlq_cap: int = 10_000  # dead tasks kept
    dlq_retention_seconds: int = 7 * 86_400  # 0: until the cap pushes them out
    handback_limit: int = 5  # hand-backs by workers lacking the handler before dead-lettering
    handback_delay_seconds: float = 1.0  # first hand-back's delay; doubles each time
    result_retention_seconds: int = 86_400  # finished tasks kept
    default_retry: dict[str, Any] | None = None  # RetryPolicy (camelCase) for tasks without one

    def limits(self) -> list[int]:
        """The 5 fallback limits the settling scripts take from ARGV (common.lua read_limits)."""
        return [
            self.max_recoveries,
            self.dlq_cap,
            self.dlq_retention_seconds * 1000,
            self.handback_limit,
            int(self.handback_delay_seconds * 1000),
        ]

    def config(self) -> dict[str, str]:
        """The `config` hash's fields (the names common.lua's read_limits reads)."""
        out = {
            "max_recoveries": str(self.max_recoveries),
            "dlq_cap": str(self.dlq_cap),
            "dlq_retention_ms": str(self.dlq_retention_seconds * 1000),
            "handback_limit": str(self.handback_limit),
            "handback_delay_ms": str(int(self.handback_delay_seconds * 1000)),
            "result_retention_s": str(self.result_retention_seconds),
        }
        if self.paused:
            out["paused"] = "1"
        if self.rate_tasks > 0 and self.rate_per_seconds > 0:
            out["rate_tasks"] = str(self.rate_tasks)
            out["rate_per_ms"] = str(int(self.rate_per_seconds * 1000))
        if self.max_concurrent > 0:
            out["max_concurrent"] = str(self.max_concurrent)
        if self.default_retry:
            out["retry"] = json.dumps(self.default_retry, separators=(",", ":"))
        return out


DEFAULTS = QueuePolicy()
