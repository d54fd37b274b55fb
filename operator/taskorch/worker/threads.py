"""The thread pool sync handlers run in.

A thread cannot be interrupted: an attempt that times out or is cancelled leaves its thread
running ("hung") until the handler returns. The timeout clock starts when the handler starts,
never while it waits for a thread, so a full pool can only delay an attempt, not fail it. Hung
threads still hold a slot of the pool, so the worker counts them against its capacity (it claims
no work that would only wait for a thread) and reports them.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from taskorch.worker import metrics

log = logging.getLogger("taskorch.worker")


class _Call:
    __slots__ = ("hung", "returned", "started")

    def __init__(self) -> None:
        self.started = False  # set in the handler's thread
        self.returned = False
        self.hung = False


class HandlerThreads:
    def __init__(self, size: int, on_release: Callable[[], None]) -> None:
        self.size = size
        self.pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="handler")
        self.hung = 0
        self.busy = 0  # threads running a handler now, hung or not
        self._count_lock = threading.Lock()
        self._on_release = on_release  # a hung thread came back: capacity to claim with

    async def call(self, func: Callable[[], Any], timeout: float | None) -> Any:
        loop = asyncio.get_running_loop()
        call = _Call()
        started = asyncio.Event()

        def run() -> Any:
            call.started = True
            with self._count_lock:
                self.busy += 1
            loop.call_soon_threadsafe(started.set)
            try:
                return func()
            finally:
                loop.call_soon_threadsafe(self._returned, call)

        # The attempt's context (its task id for the logs, its span) goes with it to the thread.
        future = loop.run_in_executor(self.pool, contextvars.copy_context().run, run)
        try:
            waiting = asyncio.ensure_future(started.wait())
            try:
                await asyncio.wait({future, waiting}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except BaseException:
            if call.started and not call.returned:
                call.hung = True
                self.hung += 1
                metrics.HUNG_THREADS.set(self.hung)
                if self.hung >= self.size:
                    log.error(
                        "all %d handler threads are held by sync handlers that timed out or "
                        "were cancelled; claiming nothing until one returns",
                        self.size,
                    )
            future.cancel()  # not started yet: it leaves the pool's queue
            raise

    def _returned(self, call: _Call) -> None:
        call.returned = True
        with self._count_lock:
            self.busy -= 1
        if call.hung:
            self.hung -= 1
            metrics.HUNG_THREADS.set(self.hung)
            self._on_release()

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
