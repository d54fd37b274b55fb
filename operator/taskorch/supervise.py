"""Supervised background loops (kopf's spawn_tasks + run_tasks(FIRST_COMPLETED)).

A process runs its main coroutine beside named loops that are meant to run for ever (the
operator's status writer, tracker and metrics; a worker's heartbeat and wake-up watchers). When
a loop ends, by an exception or by returning, that is logged with its name and the process
stops with an error, so its liveness probe fails and Kubernetes restarts it, instead of running
on with status never written again or leases never renewed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from taskorch.errors import TaskorchError

log = logging.getLogger("taskorch.supervise")
T = TypeVar("T")
CANCEL_GRACE_SECONDS = 5.0


class LoopEnded(TaskorchError):
    """A background loop ended; the process must stop and be restarted."""


async def run_supervised(
    main: Coroutine[Any, Any, T], loops: Mapping[str, Coroutine[Any, Any, Any]]
) -> T:
    """Run `main` with `loops` beside it; return main's result once it ends (the loops are then
    cancelled), or raise LoopEnded as soon as any loop ends."""
    main_task = asyncio.create_task(main, name="main")
    tasks = {asyncio.create_task(coro, name=name): name for name, coro in loops.items()}
    try:
        done, _ = await asyncio.wait({main_task, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        if main_task in done:
            return main_task.result()
        ended = next(t for t in done if t is not main_task)
        name = tasks[ended]
        error = None if ended.cancelled() else ended.exception()
        if error is not None:
            log.critical("background loop %r failed; stopping", name, exc_info=error)
            raise LoopEnded(f"background loop {name!r} failed: {error!r}") from error
        log.critical("background loop %r ended unexpectedly; stopping", name)
        raise LoopEnded(f"background loop {name!r} ended")
    finally:
        await cancel_all([main_task, *tasks])


def raise_if_cancelled() -> None:
    """Raise CancelledError if this task was cancelled even though no await raised it: a client
    library that swallows a cancellation delivered mid-call (redis-py 8's cluster client was
    seen to) would otherwise keep a cancelled loop running for ever. The task's cancelling()
    count remembers the request."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel and wait, but not for ever: a task that swallows its cancellation (a blocked
    client call) must not keep the process from stopping."""
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    if not pending:
        return
    _, stuck = await asyncio.wait(pending, timeout=CANCEL_GRACE_SECONDS)
    for t in stuck:
        log.warning("task %s did not stop within %.0fs of its cancellation", t.get_name(), 5.0)
