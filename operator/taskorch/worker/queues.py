"""Which queues a worker claims from, and how its free capacity is shared among them.

`--queues a,b` is strict order: b is served only with capacity a left unused (asynq's
StrictPriority). `--queues a:3,b:1` is weighted: every round, capacity is offered to the queues
in a weighted random order, each a share proportional to its weight, so b progresses while a
is full (asynq's and Celery's weighted queues); capacity a queue cannot use goes to the others.
Pure: no Redis, no clock.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

_ITEM = re.compile(r"^([a-z0-9]([-a-z0-9_.]*[a-z0-9])?)(:([1-9][0-9]*))?$")


@dataclass(frozen=True)
class QueueSet:
    names: tuple[str, ...]
    weights: tuple[int, ...] | None = None  # None: strict order

    @classmethod
    def parse(cls, text: str) -> QueueSet:
        """`a,b` (strict order) or `a:3,b:1` (weights); raises ValueError naming the bad part."""
        names: list[str] = []
        weights: list[int] = []
        items = [i.strip() for i in text.split(",") if i.strip()]
        if not items:
            raise ValueError("no queue given")
        for item in items:
            m = _ITEM.match(item)
            if not m:
                raise ValueError(
                    f"{item!r} is not a queue name, or name:weight with a weight of 1 or more"
                )
            if m.group(1) in names:
                raise ValueError(f"queue {m.group(1)!r} is listed twice")
            names.append(m.group(1))
            if m.group(4):
                weights.append(int(m.group(4)))
        if weights and len(weights) != len(names):
            raise ValueError("give every queue a weight (a:3,b:1) or none (strict order a,b)")
        return cls(tuple(names), tuple(weights) if weights else None)

    def __str__(self) -> str:
        if self.weights is None:
            return ",".join(self.names)
        return ",".join(f"{n}:{w}" for n, w in zip(self.names, self.weights, strict=True))

    def order(self, rng: random.Random) -> list[str]:
        """The order in which this round offers capacity: fixed when strict, else a weighted
        random permutation (each queue leads with probability weight / total)."""
        if self.weights is None:
            return list(self.names)
        keyed = [
            (rng.random() ** (1.0 / w), n) for n, w in zip(self.names, self.weights, strict=True)
        ]
        return [n for _, n in sorted(keyed, reverse=True)]

    def share(self, queue: str, free: int) -> int:
        """The capacity `queue` is offered first out of `free` (at least 1 while any is free)."""
        if self.weights is None or free <= 0:
            return free
        weight = self.weights[self.names.index(queue)]
        return max(1, math.ceil(free * weight / sum(self.weights)))
