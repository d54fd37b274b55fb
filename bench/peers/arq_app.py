"""arq. Settings: max_jobs 64 per process for both runs (arq's default is 10; streaQ's published
arq benchmark uses 32; 64 drained a pre-filled queue ~3× faster than 16 here). Results are not
kept (keep_result=0)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings

from bench.common import REDIS_URL, SLEEP_S, task_done

MAX_JOBS, MAX_JOBS_IO = 64, 64
CONFIG = f"2 processes × max_jobs {MAX_JOBS}, enqueue_job gathered 1000 at a time"
CONFIG_IO = f"2 processes × max_jobs {MAX_JOBS_IO}, enqueue_job gathered 1000 at a time"


async def noop(ctx: dict[str, Any], payload: object) -> None:
    if SLEEP_S:
        await asyncio.sleep(SLEEP_S)
    task_done()


class WorkerSettings:
    functions = [noop]  # noqa: RUF012
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    max_jobs = MAX_JOBS
    keep_result = 0


class WorkerSettingsIO:  # arq reads the class's own __dict__: no inheritance
    functions = [noop]  # noqa: RUF012
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    max_jobs = MAX_JOBS_IO
    keep_result = 0


def enqueue(url: str, n: int) -> None:
    """arq has no bulk enqueue: enqueue_job calls gathered 1000 at a time."""

    async def go() -> None:
        pool = await create_pool(RedisSettings.from_dsn(url))
        for start in range(0, n, 1000):
            await asyncio.gather(
                *(pool.enqueue_job("noop", i) for i in range(start, min(n, start + 1000)))
            )
        await pool.aclose()

    asyncio.run(go())


def worker_commands(venv_bin: Path, url: str, io: bool) -> list[list[str]]:
    cmd = [
        str(venv_bin / "arq"),
        f"bench.peers.arq_app.{'WorkerSettingsIO' if io else 'WorkerSettings'}",
    ]
    return [cmd, cmd]
