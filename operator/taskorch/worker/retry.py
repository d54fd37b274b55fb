"""Retry decisions and backoff: exponential / linear / fixed, capped, with optional full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from taskorch.api.base import duration_seconds
from taskorch.api.task import RetryPolicy
from taskorch.errors import NonRetryable

# 2**64 × any sane initial delay is past every maxDelay; a larger exponent would overflow a float.
MAX_EXPONENT = 64


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
        """From the CRD's camelCase retry object (as stored with the task), validated by the
        same model as the CRD; raises pydantic's ValidationError on a bad one."""
        p = RetryPolicy.model_validate(spec)
        return cls(
            max_attempts=p.max_attempts,
            backoff=p.backoff.value,
            initial_delay=duration_seconds(p.initial_delay),
            max_delay=duration_seconds(p.max_delay),
            jitter=p.jitter,
            on=tuple(p.retry_on or ()),
            not_on=tuple(p.no_retry_on or ()),
        )

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Delay before the retry that follows the `failures`-th failure (1-based)."""
        n = max(failures, 1)
        if self.backoff == "fixed":
            raw = self.initial_delay
        elif self.backoff == "linear":
            raw = self.initial_delay * n
        else:
            raw = self.initial_delay * 2.0 ** min(n - 1, MAX_EXPONENT)
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

__all__ = ["DEFAULT_RETRY", "NonRetryable", "Retry"]
