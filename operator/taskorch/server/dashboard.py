"""The web dashboard: server-rendered pages (Jinja2), steered with htmx, kept live by Server-Sent
Events that push each section's HTML again when it changed (no polling from the page, no
JavaScript of ours). Every page and every action asks the same Gate as the HTTP API: the
caller's token (from the login form's cookie, or an Authorization header) and their RBAC."""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from importlib.resources import files
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from redis.exceptions import RedisError

from taskorch.queue.inspect import LISTABLE, Inspector
from taskorch.queue.model import TERMINAL, TaskInfo
from taskorch.queue.workers import read_workers
from taskorch.server.actions import Actor
from taskorch.server.api import Namespace, Queue, QueueParam, TaskId
from taskorch.server.auth import Action, Caller, Forbidden, Gate, Unauthenticated, token_of
from taskorch.server.errors import Conflict, Invalid, KubeUnavailable, Missing
from taskorch.server.graph import NODE_H, NODE_W, layout
from taskorch.server.history import History, polyline
from taskorch.server.kube import KubeReviewer
from taskorch.server.views import TaskView

TOKEN_COOKIE = "taskorch_token"
PAGE = 50
LIVE_SECONDS = 1.0
StateFilter = Literal["recent", "queued", "active", "delayed", "dead", "done"]
TypeFilter = Annotated[str, Query(pattern=r"^([A-Za-z_][A-Za-z0-9_.:-]*)?$", max_length=253)]
ObjectName = Annotated[str, Path(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)]

templates = Jinja2Templates(directory=str(files("taskorch.server") / "templates"))
router = APIRouter(include_in_schema=False)


class LoginRequired(Exception):
    """No usable token: the page sends the browser to the login form."""


def _ago(value: datetime | float | int | None) -> str:
    if value is None:
        return ""
    then = value.timestamp() if isinstance(value, datetime) else float(value)
    seconds = max(0.0, time.time() - then)
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h ago"
    return f"{seconds / 86400:.1f}d ago"


def _iso_ago(value: str | None) -> str:
    return _ago(datetime.fromisoformat(value.replace("Z", "+00:00"))) if value else ""


templates.env.filters["ago"] = _ago
templates.env.filters["iso_ago"] = _iso_ago
templates.env.filters["pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False)


def _state(request: Request) -> tuple[Gate, Actor, Inspector, History, KubeReviewer | None]:
    s = request.app.state
    return s.gate, s.actor, Inspector(s.broker), s.history, s.kube


def _token(request: Request) -> str | None:
    return token_of(request.headers.get("authorization")) or request.cookies.get(TOKEN_COOKIE)


async def _caller(request: Request) -> Caller:
    gate = request.app.state.gate
    token = _token(request)
    try:
        return await gate.caller(f"Bearer {token}" if token else None)  # type: ignore[no-any-return]
    except Unauthenticated as e:
        raise LoginRequired(str(e)) from e


async def _allow(request: Request, caller: Caller, verb: str, resource: str, ns: str) -> None:
    await request.app.state.gate.check(caller, Action(verb, resource, ns))


def _page(request: Request, template: str, caller: Caller, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request, template, {"caller": caller, "now": time.time(), **context}
    )


def _fragment(template: str, **context: Any) -> str:
    return templates.get_template(template).render(now=time.time(), **context)


def _live(request: Request, event: str, render: Callable[[Caller], Awaitable[str]]) -> Response:
    """An SSE stream that pushes `render(caller)`'s HTML as `event` whenever it changed. Every
    round authenticates the token again and re-renders under the caller's RBAC (both answers
    cached for seconds): an expired or revoked token, or a revoked permission, ends the
    stream with the reason as its last event."""

    async def stream() -> AsyncIterator[str]:
        shown = None
        while not await request.is_disconnected():
            ended = False
            try:
                html = await render(await _caller(request))
            except (Forbidden, LoginRequired, Unauthenticated) as e:
                html, ended = _error_html(f"{type(e).__name__}: {e}"), True
            except RedisError as e:
                html = _error_html(f"Redis is unavailable: {e}")
            except (KubeUnavailable, Missing) as e:
                html = _error_html(str(e))
            if html != shown:
                shown = html
                yield f"event: {event}\n" + "".join(f"data: {line}\n" for line in html.splitlines())
                yield "\n"
            else:
                yield ": keep-alive\n\n"
            if ended:
                return
            await asyncio.sleep(LIVE_SECONDS)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


def _error_html(message: str) -> str:
    return f'<p class="error">{_escape(message)}</p>'


def _flash(message: str, error: bool = False) -> HTMLResponse:
    cls = "flash error" if error else "flash"
    return HTMLResponse(f'<div class="{cls}" role="status">{_escape(message)}</div>')


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


async def _act(request: Request, do: Callable[[Caller, str | None], Awaitable[str]]) -> Response:
    """Run a dashboard action: only from htmx (a cross-site form cannot send the header, so a
    forged POST does nothing), then say what happened in the page's flash area."""
    if request.headers.get("hx-request") != "true":
        return HTMLResponse("dashboard actions are sent by the page (htmx)", 400)
    caller = await _caller(request)
    try:
        return _flash(await do(caller, _token(request)))
    except (Forbidden, Unauthenticated, Conflict, Missing, Invalid, KubeUnavailable) as e:
        return _flash(str(e), error=True)


# --- login ------------------------------------------------------------------------------------


@router.get("/login")
async def login_form(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(request, "login.html", {"error": "", "caller": None})


@router.post("/login")
async def login(request: Request, token: Annotated[str, Form()]) -> Response:
    try:
        await request.app.state.gate.caller(f"Bearer {token.strip()}")
    except Unauthenticated as e:
        return templates.TemplateResponse(
            request, "login.html", {"error": str(e), "caller": None}, status_code=401
        )
    response = RedirectResponse("/", 303)
    secure = request.headers.get("x-forwarded-proto", request.url.scheme) == "https"
    # HttpOnly: no script reads it; SameSite=Strict: no other site's page sends it.
    response.set_cookie(
        TOKEN_COOKIE, token.strip(), httponly=True, samesite="strict", secure=secure
    )
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/login", 303)
    response.delete_cookie(TOKEN_COOKIE)
    return response


# --- namespaces -------------------------------------------------------------------------------


@router.get("/")
async def home(request: Request, namespace: str = "") -> Response:
    caller = await _caller(request)
    if namespace:
        return RedirectResponse(f"/ns/{namespace}/queues", 303)
    gate, _, inspector, _, _ = _state(request)
    names = sorted({ns for ns, _ in await inspector.queues()})
    visible = [ns for ns in names if await gate.allowed(caller, Action("list", "tasks", ns))]
    return _page(request, "home.html", caller, namespaces=visible)


# --- queues -----------------------------------------------------------------------------------


async def _queues_html(request: Request, caller: Caller, ns: str) -> str:
    await _allow(request, caller, "list", "taskqueues", ns)
    _, _, inspector, history, _ = _state(request)
    rows = []
    for q in await inspector.queues_of(ns):
        stats = await inspector.stats(ns, q)
        series = history.series(ns, q)
        rows.append(
            {
                "stats": stats,
                "throughput": series[-1].throughput if series else None,
                "failure": series[-1].failure_ratio if series else None,
                "tput_line": polyline([p.throughput for p in series], 160, 28),
                "fail_line": polyline([p.failure_ratio for p in series], 160, 28, top=1.0),
                "points": len(series),
            }
        )
    types = [
        {
            "type": type_,
            "last": series[-1],
            "tput_line": polyline([p.throughput for p in series], 160, 28),
            "fail_line": polyline([p.failure_ratio for p in series], 160, 28, top=1.0),
        }
        for type_, series in history.type_series(ns).items()
        if series
    ]
    return _fragment("_queues.html", ns=ns, rows=rows, types=types, interval=history.interval)


@router.get("/ns/{ns}")
async def namespace_home(ns: str) -> Response:
    return RedirectResponse(f"/ns/{ns}/queues", 303)


def _section(
    name: str, title: str, render: Callable[[Request, Caller, str], Awaitable[str]]
) -> None:
    """A namespace's page of one live section: /ns/NS/NAME renders it, /ns/NS/live/NAME pushes
    it again whenever it changes."""

    async def page(request: Request, ns: Namespace) -> Response:
        caller = await _caller(request)
        body = await render(request, caller, ns)
        return _page(request, "section.html", caller, ns=ns, body=body, tab=name, title=title)

    async def live(request: Request, ns: Namespace) -> Response:
        await _caller(request)  # no token: to the login form, not an empty stream
        return _live(request, name, lambda caller: render(request, caller, ns))

    router.add_api_route(f"/ns/{{ns}}/{name}", page, methods=["GET"])
    # /live/NAME, not NAME/live: a Workflow may be called "live"
    router.add_api_route(f"/ns/{{ns}}/live/{name}", live, methods=["GET"])


_section("queues", "Queues", _queues_html)


@router.post("/ns/{ns}/queues/{queue}/{verb}")
async def queue_action(request: Request, ns: Namespace, queue: Queue, verb: str) -> Response:
    actor = request.app.state.actor
    if verb not in ("pause", "resume"):
        return HTMLResponse("unknown action", 404)
    return await _act(request, lambda c, t: actor.set_paused(c, t, ns, queue, verb == "pause"))


# --- tasks ------------------------------------------------------------------------------------


async def _tasks_html(
    request: Request, caller: Caller, ns: str, queue: str, state: str, type_: str, offset: int
) -> str:
    await _allow(request, caller, "list", "tasks", ns)
    _, _, inspector, _, _ = _state(request)
    if state in LISTABLE:
        tasks, total = await inspector.tasks(ns, queue, state, offset, PAGE)
        totals = {state: total}
    else:  # "recent": the head of every state, newest first; a page of each, never a scan
        tasks, totals = [], {}
        for where in LISTABLE:
            found, totals[where] = await inspector.tasks(ns, queue, where, 0, PAGE)
            tasks += found
        tasks.sort(key=lambda t: t.finished_ms or t.started_ms or t.created_ms or 0, reverse=True)
        tasks = tasks[:PAGE]
    if type_:
        tasks = [t for t in tasks if t.type == type_]
    return _fragment(
        "_tasks.html",
        ns=ns,
        queue=queue,
        state=state,
        type_=type_,
        offset=offset,
        page=PAGE,
        tasks=[TaskView.of(t) for t in tasks],
        totals=totals,
    )


@router.get("/ns/{ns}/tasks")
async def tasks_page(
    request: Request,
    ns: Namespace,
    queue: QueueParam = "default",
    state: StateFilter = "recent",
    type: TypeFilter = "",
    id: str = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    caller = await _caller(request)
    if id.strip():
        return RedirectResponse(f"/ns/{ns}/tasks/{id.strip()}?queue={queue}", 303)
    body = await _tasks_html(request, caller, ns, queue, state, type, offset)
    query = request.url.query
    return _page(
        request,
        "tasks.html",
        caller,
        ns=ns,
        queue=queue,
        queues=await Inspector(request.app.state.broker).queues_of(ns),
        state=state,
        states=("recent", *LISTABLE),
        type_=type,
        body=body,
        live=f"/ns/{ns}/live/tasks?{query}",
        tab="tasks",
    )


@router.get("/ns/{ns}/live/tasks")
async def tasks_live(
    request: Request,
    ns: Namespace,
    queue: QueueParam = "default",
    state: StateFilter = "recent",
    type: TypeFilter = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    await _caller(request)
    return _live(
        request,
        "tasks",
        lambda caller: _tasks_html(request, caller, ns, queue, state, type, offset),
    )


async def _task_html(request: Request, caller: Caller, ns: str, queue: str, task_id: str) -> str:
    await _allow(request, caller, "get", "tasks", ns)
    _, actor, _, _, _ = _state(request)
    info: TaskInfo | None = await actor.broker.get(ns, queue, task_id)
    task = TaskView.of(info) if info else None
    return _fragment("_task.html", ns=ns, queue=queue, task_id=task_id, task=task)


@router.get("/ns/{ns}/tasks/{task_id}")
async def task_page(
    request: Request,
    ns: Namespace,
    task_id: TaskId,
    queue: QueueParam = "default",
) -> Response:
    caller = await _caller(request)
    body = await _task_html(request, caller, ns, queue, task_id)
    return _page(
        request, "task.html", caller, ns=ns, queue=queue, task_id=task_id, body=body, tab="tasks"
    )


@router.get("/ns/{ns}/tasks/{task_id}/live")
async def task_live(
    request: Request,
    ns: Namespace,
    task_id: TaskId,
    queue: QueueParam = "default",
) -> Response:
    await _caller(request)
    return _live(request, "task", lambda caller: _task_html(request, caller, ns, queue, task_id))


@router.post("/ns/{ns}/tasks/{task_id}/{verb}")
async def task_action(
    request: Request,
    ns: Namespace,
    task_id: TaskId,
    verb: str,
    queue: QueueParam = "default",
) -> Response:
    actor: Actor = request.app.state.actor
    if verb == "cancel":
        return await _act(request, lambda c, t: actor.cancel(c, t, ns, queue, task_id))
    if verb == "requeue":
        return await _act(request, lambda c, _: actor.requeue(c, ns, queue, task_id))
    if verb == "delete":
        return await _act(request, lambda c, _: actor.delete(c, ns, queue, task_id))
    return HTMLResponse("unknown action", 404)


# --- dead-letter queue ------------------------------------------------------------------------


@router.get("/ns/{ns}/dead")
async def dead_page(
    request: Request,
    ns: Namespace,
    queue: QueueParam = "default",
    type: TypeFilter = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    caller = await _caller(request)
    body = await _tasks_html(request, caller, ns, queue, "dead", type, offset)
    return _page(
        request,
        "dead.html",
        caller,
        ns=ns,
        queue=queue,
        queues=await Inspector(request.app.state.broker).queues_of(ns),
        type_=type,
        body=body,
        live=f"/ns/{ns}/live/tasks?"
        + urlencode({"queue": queue, "state": "dead", "type": type, "offset": offset}),
        tab="dead",
    )


@router.post("/ns/{ns}/dead/{verb}")
async def dead_action(
    request: Request,
    ns: Namespace,
    verb: str,
    queue: QueueParam = "default",
    type: TypeFilter = "",
) -> Response:
    gate, actor, _, _, _ = _state(request)

    async def requeue_all(caller: Caller, _: str | None) -> str:
        revived = await actor.requeue_dead(caller, ns, queue, type or None)
        return f"{len(revived)} dead task(s) requeued" + (f" of type {type}" if type else "")

    async def purge(caller: Caller, _: str | None) -> str:
        await gate.check(caller, Action("delete", "tasks", ns))
        return f"{await actor.broker.purge_dead(ns, queue)} dead task(s) deleted"

    if verb == "requeue":
        return await _act(request, requeue_all)
    if verb == "purge":
        return await _act(request, purge)
    return HTMLResponse("unknown action", 404)


# --- workflows --------------------------------------------------------------------------------


async def _objects(request: Request, caller: Caller, plural: str, ns: str) -> list[dict[str, Any]]:
    await _allow(request, caller, "list", plural, ns)
    kube: KubeReviewer | None = request.app.state.kube
    if kube is None:
        return []
    items = await kube.list(plural, ns)
    return sorted(items, key=lambda o: o["metadata"]["creationTimestamp"], reverse=True)


async def _workflows_html(request: Request, caller: Caller, ns: str) -> str:
    items = await _objects(request, caller, "workflows", ns)
    return _fragment("_workflows.html", ns=ns, items=items)


_section("workflows", "Workflows", _workflows_html)


async def _workflow_html(request: Request, caller: Caller, ns: str, name: str) -> str:
    await _allow(request, caller, "get", "workflows", ns)
    kube: KubeReviewer | None = request.app.state.kube
    wf = await kube.get("workflows", ns, name) if kube else None
    if wf is None:
        return _fragment("_workflow.html", ns=ns, name=name, wf=None)
    graph = layout(wf.get("spec") or {}, wf.get("status"))
    return _fragment(
        "_workflow.html", ns=ns, name=name, wf=wf, graph=graph, node_w=NODE_W, node_h=NODE_H
    )


@router.get("/ns/{ns}/workflows/{name}")
async def workflow_page(request: Request, ns: Namespace, name: ObjectName) -> Response:
    caller = await _caller(request)
    body = await _workflow_html(request, caller, ns, name)
    return _page(request, "workflow.html", caller, ns=ns, name=name, body=body, tab="workflows")


@router.get("/ns/{ns}/workflows/{name}/live")
async def workflow_live(request: Request, ns: Namespace, name: ObjectName) -> Response:
    await _caller(request)
    return _live(request, "workflow", lambda caller: _workflow_html(request, caller, ns, name))


@router.post("/ns/{ns}/workflows/{name}/retry")
async def workflow_retry(request: Request, ns: Namespace, name: ObjectName) -> Response:
    actor: Actor = request.app.state.actor
    return await _act(request, lambda c, t: actor.retry_workflow(c, t, ns, name))


# --- worker pools and workers -----------------------------------------------------------------


async def _workers_html(request: Request, caller: Caller, ns: str) -> str:
    pools = await _objects(request, caller, "workerpools", ns)
    _, actor, _, history, _ = _state(request)
    workers = await read_workers(actor.broker.redis, ns)
    rates = {w.name: history.worker_rate.get((ns, w.name)) for w in workers}
    return _fragment("_workers.html", ns=ns, pools=pools, workers=workers, rates=rates)


_section("workers", "Worker pools and workers", _workers_html)


# --- schedules --------------------------------------------------------------------------------


async def _schedules_html(request: Request, caller: Caller, ns: str) -> str:
    items = await _objects(request, caller, "schedules", ns)
    return _fragment("_schedules.html", ns=ns, items=items)


_section("schedules", "Schedules", _schedules_html)


@router.post("/ns/{ns}/schedules/{name}/{verb}")
async def schedule_action(request: Request, ns: Namespace, name: ObjectName, verb: str) -> Response:
    actor: Actor = request.app.state.actor
    if verb == "trigger":
        return await _act(request, lambda c, t: actor.trigger_schedule(c, t, ns, name))
    if verb in ("suspend", "resume"):
        return await _act(
            request, lambda c, t: actor.suspend_schedule(c, t, ns, name, verb == "suspend")
        )
    return HTMLResponse("unknown action", 404)


templates.env.globals["TERMINAL_STATES"] = {str(s) for s in TERMINAL}
templates.env.globals["utcnow"] = lambda: datetime.now(UTC)
