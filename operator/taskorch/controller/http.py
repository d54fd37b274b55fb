"""The operator's HTTP port: Prometheus metrics, and each WorkerPool's numbers as JSON for
KEDA's metrics-api scaler (docs/scaling.md), on one aiohttp server inside the operator's event
loop (kopf already depends on aiohttp). Standby replicas serve it too, from the WorkerPool's
status, so a Service in front of both replicas always answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

# A WorkerPool's current numbers (its status), or None when there is no such WorkerPool.
PoolStatus = Callable[[str, str], Awaitable[dict[str, Any] | None]]
POOL_FIELDS = ("backlog", "inFlight", "busy", "workers", "replicas", "desired", "recommended")


def make_app(pool_status: PoolStatus) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def pool(request: web.Request) -> web.Response:
        ref = (request.match_info["namespace"], request.match_info["name"])
        status = await pool_status(*ref)
        if status is None:
            raise web.HTTPNotFound(text=f"no WorkerPool {ref[0]}/{ref[1]}")
        if not all(k in status for k in POOL_FIELDS):
            raise web.HTTPServiceUnavailable(text="no measurement yet (or Redis unreachable)")
        return web.json_response({k: status[k] for k in POOL_FIELDS})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/scaler/{namespace}/{name}", pool)
    return app


async def serve(pool_status: PoolStatus, port: int) -> None:
    """Serve until cancelled (a supervised loop of the operator)."""
    runner = web.AppRunner(make_app(pool_status), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", port)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
