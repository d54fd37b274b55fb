"""Throughput and failure rate over time, for the dashboard's charts: the server samples every
queue's counters and every worker's finished count on an interval and keeps the last points in
memory (a restart starts the charts afresh; Prometheus keeps the long history)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

from redis.exceptions import RedisError

from taskorch.queue import keys
from taskorch.queue.inspect import Inspector
from taskorch.queue.model import text
from taskorch.queue.workers import WorkerPresence, read_workers

log = logging.getLogger("taskorch.server")
COUNTERS = ("succeeded", "dead", "cancelled", "retried")


@dataclass(frozen=True)
class TypePoint:
    t: float
    throughput: float  # attempts ended per second, across the namespace's live workers
    failure_ratio: float  # of those, the share that raised
    mean_seconds: float | None  # mean handler time of those attempts


@dataclass(frozen=True)
class Point:
    t: float  # epoch seconds
    throughput: float  # tasks finished per second since the previous sample
    failure_ratio: float  # failed attempts / attempts ended, since the previous sample


class History:
    def __init__(self, inspector: Inspector, interval: float = 5.0, points: int = 120) -> None:
        self.inspector = inspector
        self.interval = interval
        self.points = points
        self._last: dict[tuple[str, str], tuple[float, list[int]]] = {}
        self._series: dict[tuple[str, str], deque[Point]] = {}
        self._workers: dict[tuple[str, str], tuple[float, int]] = {}
        self.worker_rate: dict[tuple[str, str], float] = {}
        self._types_last: dict[tuple[str, str], tuple[float, tuple[int, int, float]]] = {}
        self._types: dict[tuple[str, str], deque[TypePoint]] = {}
        self._namespaces_sampled: dict[str, float] = {}  # when each was last sampled

    def series(self, namespace: str, queue: str) -> list[Point]:
        return list(self._series.get((namespace, queue), ()))

    def type_series(self, namespace: str) -> dict[str, list[TypePoint]]:
        """Per task type of the namespace, from its live workers' own counts."""
        return {t: list(s) for (ns, t), s in sorted(self._types.items()) if ns == namespace}

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
            except (RedisError, OSError) as e:
                log.warning("history: cannot sample queues: %s", e)
            except Exception:
                # The charts are a convenience: one bad sample must not stop them for good.
                log.exception("history: sampling failed")
            await asyncio.sleep(self.interval)

    async def sample(self) -> None:
        queues = await self.inspector.queues()
        redis = self.inspector.redis
        async with redis.pipeline(transaction=False) as p:
            for ns, q in queues:
                p.hmget(keys.stats(ns, q), *COUNTERS)
            replies = await p.execute()
        now = time.time()
        for ref, reply in zip(queues, replies, strict=True):
            counts = [int(text(v)) if v else 0 for v in reply]
            before = self._last.get(ref)
            self._last[ref] = (now, counts)
            if before is None:
                continue
            seconds = max(now - before[0], 1e-3)
            d = [max(0, a - b) for a, b in zip(counts, before[1], strict=True)]
            finished, failed = d[0] + d[1] + d[2], d[1] + d[3]
            ended = d[0] + d[1] + d[3]
            self._series.setdefault(ref, deque(maxlen=self.points)).append(
                Point(now, finished / seconds, failed / ended if ended else 0.0)
            )
        seen: dict[tuple[str, str], tuple[float, int]] = {}
        for ns in {ns for ns, _ in queues}:
            workers = await read_workers(redis, ns)
            self._sample_types(ns, workers, now)
            for w in workers:
                key = (ns, w.name)
                seen[key] = (now, w.finished)
                if (prev := self._workers.get(key)) is not None:
                    rate = max(0, w.finished - prev[1]) / max(now - prev[0], 1e-3)
                    self.worker_rate[key] = rate
        # Workers come and go with their pods: keep only the live ones.
        self._workers = seen
        self.worker_rate = {k: v for k, v in self.worker_rate.items() if k in seen}

    def _sample_types(self, namespace: str, workers: list[WorkerPresence], now: float) -> None:
        totals: dict[str, list[float]] = {}
        for w in workers:
            for type_, stats in w.type_stats.items():
                acc = totals.setdefault(type_, [0, 0, 0.0])
                for i, v in enumerate(stats):
                    acc[i] += v
        previous = self._namespaces_sampled.get(namespace)
        self._namespaces_sampled[namespace] = now
        for type_, (done, failed, seconds) in totals.items():
            key = (namespace, type_)
            before = self._types_last.get(key)
            self._types_last[key] = (now, (int(done), int(failed), seconds))
            if before is None:
                if previous is None:
                    continue  # the server's first look: counts from before it, no rate
                before = (previous, (0, 0, 0.0))  # a type new since the last sample
            # a worker that left takes its counts along: never a negative rate
            d_done, d_failed = max(0, int(done) - before[1][0]), max(0, int(failed) - before[1][1])
            d_seconds = max(0.0, seconds - before[1][2])
            ended = d_done + d_failed
            self._types.setdefault(key, deque(maxlen=self.points)).append(
                TypePoint(
                    now,
                    ended / max(now - before[0], 1e-3),
                    d_failed / ended if ended else 0.0,
                    d_seconds / ended if ended else None,
                )
            )


def polyline(values: list[float], width: int, height: int, top: float | None = None) -> str:
    """SVG polyline points for `values` scaled into width x height (y grows down)."""
    if not values:
        return ""
    peak = top if top is not None else max(max(values), 1e-9)
    step = width / max(len(values) - 1, 1)
    return " ".join(
        f"{i * step:.1f},{height - min(v / peak, 1.0) * height:.1f}" for i, v in enumerate(values)
    )
