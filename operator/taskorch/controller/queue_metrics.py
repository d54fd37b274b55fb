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


async def refresh(broker: Broker) -> None:
    """One read of every queue into the gauges."""
    for ns, queue in await broker.queues():
        d = await broker.depth(ns, queue)
        READY.labels(ns, queue).set(d["ready"])
        ACTIVE.labels(ns, queue).set(d["active"])
        DELAYED.labels(ns, queue).set(d["delayed"])
        DEAD.labels(ns, queue).set(d["dead"])
        PAUSED.labels(ns, queue).set(1 if d["paused"] else 0)
        OLDEST_AGE.labels(ns, queue).set(d["oldest_ready_age_s"] or 0)


async def run(broker: Broker, interval: float = 5.0) -> None:
    while True:
        try:
            await refresh(broker)
            UP.set(1)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
            UP.set(0)
            log.debug("queue metrics unavailable: %s", e)
        await asyncio.sleep(interval)
