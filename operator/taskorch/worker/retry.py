"""Retry decisions and backoff: exponential / linear / fixed, capped, with optional full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from taskorch.api.base import duration_seconds


@dataclass(frozen=True)
class Retry:
    """A handler's retry policy; a Task's own `spec.retry` overrides it."""

    max_attempts: int = 3
    backoff: str = "exponential"
    initial_delay: float = 1.0
    max_delay: float = 300.0
    jitter: bool = True
    on: tuple[type[BaseException] | str, ...] = ()
    not_on: tuple[type[BaseException] | str, ...] = ()

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Retry:
        """From the CRD's camelCase retry object (as stored with the task)."""
        return cls(
            max_attempts=int(spec.get("maxAttempts", 3)),
            backoff=str(spec.get("backoff", "exponential")),
            initial_delay=duration_seconds(spec.get("initialDelay", "1s")),
            max_delay=duration_seconds(spec.get("maxDelay", "5m")),
            jitter=bool(spec.get("jitter", True)),
            on=tuple(spec.get("retryOn") or ()),
            not_on=tuple(spec.get("noRetryOn") or ()),
        )

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Delay before the retry that follows the `failures`-th failure (1-based)."""
        n = max(failures, 1)
        if self.backoff == "fixed":
            raw = self.initial_delay
        elif self.backoff == "linear":
            raw = self.initial_delay * n
        else:
            raw = self.initial_delay * 2 ** (n - 1)
        capped = min(raw, self.max_delay)
        return (rng or random).uniform(0, capped) if self.jitter else capped

    def retries(self, error: BaseException) -> bool:
        """Whether this error class is retryable under the policy."""
        if self.not_on and _matches(error, self.not_on):
            return False
        return not self.on or _matches(error, self.on)


def _matches(error: BaseException, classes: tuple[type[BaseException] | str, ...]) -> bool:
    names = {c.__name__ for c in type(error).__mro__}
    qualified = {f"{c.__module__}.{c.__qualname__}" for c in type(error).__mro__}
    for cls in classes:
        if isinstance(cls, str):
            if cls in names or cls in qualified:
                return True
        elif isinstance(error, cls):
            return True
    return False


DEFAULT_RETRY = Retry()


@dataclass
class NonRetryable(Exception):
    """Raise from a handler (or raised by the runtime) to dead-letter the task at once."""

    reason: str
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}" if self.message else self.reason
