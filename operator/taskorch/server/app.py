"""`taskorch server`: the HTTP API (and the dashboard) as one ASGI app. It reads Redis and the API
server, acts only through the queue's own scripts, and never writes a CR's status."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from redis.exceptions import RedisError

from taskorch import __version__
from taskorch.queue.broker import Broker
from taskorch.queue.inspect import Inspector
from taskorch.server import api, dashboard
from taskorch.server.actions import Actor
from taskorch.server.auth import Forbidden, Gate, Unauthenticated
from taskorch.server.dashboard import LoginRequired
from taskorch.server.errors import Conflict, Invalid, KubeUnavailable, Missing
from taskorch.server.history import History
from taskorch.server.kube import KubeReviewer
from taskorch.settings import Settings

log = logging.getLogger("taskorch.server")


def create_app(
    settings: Settings,
    gate: Gate,
    kube: KubeReviewer | None,
    broker: Broker | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.broker = broker or Broker.from_url(settings.redis_url, settings)
        app.state.actor = Actor(gate, app.state.broker, kube)
        app.state.history = History(Inspector(app.state.broker), settings.server_history_seconds)
        sampler = asyncio.create_task(app.state.history.run(), name="history")
        try:
            yield
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            await app.state.broker.close()

    app = FastAPI(
        title="taskorch",
        version=__version__,
        summary="Submit, inspect and steer taskorch tasks and queues; every call is authorized "
        "by the caller's Kubernetes RBAC.",
        lifespan=lifespan,
    )
    app.state.gate = gate
    app.state.kube = kube
    app.include_router(api.router)
    app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(packages=[("taskorch.server", "static")]), name="static")

    @app.exception_handler(Unauthenticated)
    async def unauthenticated(_: Request, e: Unauthenticated) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, 401, {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, e: LoginRequired) -> Response:
        if request.headers.get("hx-request") == "true":
            return Response(status_code=204, headers={"HX-Redirect": "/login"})
        return RedirectResponse("/login", 303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, e: Forbidden) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(e)}, 403)
        return dashboard.templates.TemplateResponse(
            request,
            "error.html",
            {"title": "Not allowed", "message": str(e), "caller": None},
            status_code=403,
        )

    @app.exception_handler(Missing)
    async def missing(_: Request, e: Missing) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, 404)

    @app.exception_handler(Invalid)
    async def invalid(_: Request, e: Invalid) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, 422)

    @app.exception_handler(KubeUnavailable)
    async def kube_down(_: Request, e: KubeUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, 503, {"Retry-After": "1"})

    @app.exception_handler(Conflict)
    async def conflict(_: Request, e: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, 409)

    @app.exception_handler(RedisError)
    async def redis_down(_: Request, e: RedisError) -> JSONResponse:
        log.warning("redis: %s", e)
        return JSONResponse({"detail": f"Redis is unavailable: {e}"}, 503, {"Retry-After": "1"})

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
