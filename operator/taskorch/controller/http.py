"""The operator's HTTP port: Prometheus metrics, and each WorkerPool's numbers as JSON for
KEDA's metrics-api scaler (docs/scaling.md), on one aiohttp server inside the operator's event
loop (kopf already depends on aiohttp)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from taskorch.controller.workerpools import WorkerPoolRunner

POOL_FIELDS = ("backlog", "inFlight", "busy", "workers", "replicas", "desired", "recommended")


def make_app(pools: WorkerPoolRunner) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def pool(request: web.Request) -> web.Response:
        ref = (request.match_info["namespace"], request.match_info["name"])
        found = pools.pools.get(ref)
        if found is None:
            raise web.HTTPNotFound(text=f"no WorkerPool {ref[0]}/{ref[1]}")
        status = found.status
        if not all(k in status for k in POOL_FIELDS):
            raise web.HTTPServiceUnavailable(text="no measurement yet (or Redis unreachable)")
        return web.json_response({k: status[k] for k in POOL_FIELDS})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/scaler/{namespace}/{name}", pool)
    return app


async def serve(pools: WorkerPoolRunner, port: int) -> None:
    """Serve until cancelled (a supervised loop of the operator)."""
    runner = web.AppRunner(make_app(pools), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", port)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
