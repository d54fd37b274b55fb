"""Per-queue gauges the operator exports for dashboards and alerts (backlog, age, DLQ size).

Read from Redis on an interval rather than per scrape, so a scrape never waits on Redis and many
Prometheus replicas cost one read each interval.
"""

from __future__ import annotations

import asyncio
import logging

import redis.exceptions
from prometheus_client import Gauge

from taskorch.queue.broker import Broker
from taskorch.queue.inspect import Inspector

log = logging.getLogger("taskorch.metrics")
LABELS = ("namespace", "queue")
READY = Gauge("taskorch_queue_ready", "Tasks ready to be claimed.", LABELS)
ACTIVE = Gauge("taskorch_queue_active", "Tasks running (leased by a worker).", LABELS)
DELAYED = Gauge("taskorch_queue_delayed", "Tasks waiting for runAt or a retry backoff.", LABELS)
DEAD = Gauge("taskorch_queue_dead", "Tasks in the dead-letter queue.", LABELS)
PAUSED = Gauge("taskorch_queue_paused", "1 when the queue is paused.", LABELS)
OLDEST_AGE = Gauge(
    "taskorch_queue_oldest_ready_age_seconds", "Age of the oldest ready task (0 when none).", LABELS
)
UP = Gauge("taskorch_queue_metrics_up", "1 when the last read of the queues from Redis worked.")


async def refresh(inspector: Inspector) -> None:
    """One read of every queue into the gauges."""
    for q in await inspector.all_stats():
        labels = (q.namespace, q.queue)
        READY.labels(*labels).set(q.ready)
        ACTIVE.labels(*labels).set(q.active)
        DELAYED.labels(*labels).set(q.delayed)
        DEAD.labels(*labels).set(q.dead)
        PAUSED.labels(*labels).set(1 if q.paused else 0)
        OLDEST_AGE.labels(*labels).set(q.oldest_ready_age_s or 0)


async def run(broker: Broker, interval: float = 5.0) -> None:
    inspector = Inspector(broker)
    while True:
        try:
            await refresh(inspector)
            UP.set(1)
        except redis.exceptions.RedisError as e:
            UP.set(0)  # the gauges are stale: alert on this, not on frozen values
            log.debug("queue metrics unavailable: %s", e)
        await asyncio.sleep(interval)
