"""`taskorch operator`: kopf plus the status writer, in one asyncio program."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from typing import Any

import kopf

# each kind's module registers its kopf handlers when imported
from taskorch.controller import (
    http,
    queue_metrics,
    redis_users,
    schedules,
    taskqueues,
    tasks,
    workerpools,
    workflows,
)
from taskorch.controller.admission import Admission
from taskorch.controller.consumer import StatusWriter
from taskorch.controller.job_runner import JobRunners
from taskorch.controller.kube import Kube
from taskorch.controller.leader import LeaderElector, elector_for, standby_liveness
from taskorch.controller.task_watch import TaskWatch
from taskorch.controller.tracker import Tracker
from taskorch.queue.broker import Broker
from taskorch.queue.connection import warn_unless_noeviction
from taskorch.settings import Settings
from taskorch.supervise import run_supervised

log = logging.getLogger("taskorch.operator")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Every handler is an event handler, which kopf keeps no record of (no annotation writes:
    # controller/admission.py says why; Tasks are not kopf's at all: task_watch.py says why);
    # should one ever need it, its bookkeeping goes to annotations so the status subresource
    # stays ours alone. Post only warnings as Events (the status writer posts the meaningful
    # ones).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="taskorch.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="taskorch.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True
    # The CRDs are installed with the operator (Helm crds/), so no runtime watch of CRDs and
    # namespaces: that would need cluster-wide list/watch on both, which least privilege denies.
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60


@kopf.on.cleanup()
async def hand_back_container_tasks(memo: kopf.Memo, **_: Any) -> None:
    # Before kopf cancels the tasks it did not start: handed back, the attempts' Jobs run on.
    jobs = memo.get("jobs")
    if jobs is not None:
        await jobs.stop()


def run_operator(
    settings: Settings, namespaces: list[str], liveness: str | None, metrics_port: int | None
) -> None:
    asyncio.run(_main(settings, namespaces, liveness, metrics_port))


async def _main(
    settings: Settings, namespaces: list[str], liveness: str | None, metrics_port: int | None
) -> None:
    kube = Kube()
    elector = elector_for(settings, kube)
    leading: dict[str, workerpools.WorkerPoolRunner] = {}

    async def pool_status(namespace: str, name: str) -> dict[str, Any] | None:
        # The leader answers from its measurements; a standby from what the leader wrote.
        if "pools" in leading:
            found = leading["pools"].pools.get((namespace, name))
            return None if found is None else found.status
        pool = await kube.get("workerpools", namespace, name)
        return None if pool is None else dict(pool.get("status") or {})

    # The metrics port is served by standbys too (KEDA may reach either replica).
    beside = {} if metrics_port is None else {"http": http.serve(pool_status, metrics_port)}
    try:
        await run_supervised(_lead(settings, kube, elector, leading, namespaces, liveness), beside)
    finally:
        await kube.close()


async def _lead(
    settings: Settings,
    kube: Kube,
    elector: LeaderElector | None,
    leading: dict[str, workerpools.WorkerPoolRunner],
    namespaces: list[str],
    liveness: str | None,
) -> None:
    """Wait for the Lease (when electing), then run kopf and every loop that writes."""
    if elector is not None:
        async with standby_liveness(liveness):
            await elector.acquire()
    broker = Broker.from_url(settings.redis_url, settings, health_check_interval=10)
    await warn_unless_noeviction(broker.redis)
    jobs = JobRunners(broker, kube, settings, namespaces) if settings.container_tasks else None
    tracker = Tracker(
        broker,
        kube,
        functools.partial(tasks.reenqueue, broker, kube, jobs),
        resync_seconds=settings.resync_seconds,
    )
    runner = workflows.WorkflowRunner(broker, kube, jobs)
    queues = taskqueues.TaskQueueRunner(broker, kube, settings.queue_status_seconds)
    cron = schedules.ScheduleRunner(kube)
    pools = leading["pools"] = workerpools.WorkerPoolRunner(broker, kube)
    admission = Admission(broker, kube, jobs=jobs)
    memo = kopf.Memo(
        admission=admission,
        broker=broker,
        kube=kube,
        tracker=tracker,
        workflows=runner,
        taskqueues=queues,
        schedules=cron,
        workerpools=pools,
        jobs=jobs,
    )
    writer = StatusWriter(
        broker, kube, consumer=f"{socket.gethostname()}-{os.getpid()}", workflows=runner.reconcile
    )
    # Every loop the operator runs beside kopf, in one place: if one ends, the process stops
    # (and its Deployment restarts it) rather than run on with status never written again.
    loops = {
        "status-writer": writer.run(),
        "tracker": tracker.run(),
        "queue-metrics": queue_metrics.run(broker),
        "workflow-resync": runner.run(settings.resync_seconds),
        "taskqueue-status": queues.run(),
        "schedules": cron.run(),
        "workerpools": pools.run(),
    }
    if jobs is not None:
        loops["job-runners"] = jobs.run()
    users = None
    if settings.redis_acl:
        users = memo.redis_users = redis_users.RedisUsers(broker.redis, kube)
        loops["redis-users"] = users.run(namespaces)
    # Tasks are watched by the operator itself, not by kopf (task_watch.py says why).
    loops["task-watch"] = TaskWatch(kube, broker, admission, tracker, namespaces, users).run()
    if elector is not None:
        loops["leader-lease"] = elector.hold()
    try:
        await run_supervised(
            kopf.operator(
                clusterwide=not namespaces,
                namespaces=namespaces,
                memo=memo,
                liveness_endpoint=liveness or None,
            ),
            loops,
        )
    finally:
        await admission.close()
        await broker.close()
        if elector is not None:
            await _release(elector)


async def _release(elector: LeaderElector) -> None:
    """Hand the Lease over at once on a stop (every writing loop has ended by now)."""
    try:
        await elector.release()
    except Exception as e:  # the standby then takes over when the Lease expires
        log.warning("could not release the Lease: %s", e)
