from typing import Any

from arq.connections import RedisSettings

from bench.common import DONE_KEY, REDIS_URL


async def noop(ctx: dict[str, Any], payload: object) -> None:
    await ctx["redis"].incr(DONE_KEY)


class WorkerSettings:
    functions = [noop]  # noqa: RUF012
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    max_jobs = 16
    keep_result = 0
