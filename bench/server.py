"""`taskorch server` benchmarks: HTTP submit throughput (one task a request, and 1,000 a request)
as a ratio to the SDK's own in the same run, and the dashboard's page times with 100,000 tasks
queued (target p95 < 100 ms, seed 003's API target).

The server runs in its own process under uvicorn, as `taskorch server` does, with the Kubernetes
reviews answered from a table: in steady state every review is a cache hit (10 s), so the
figure is the server's own cost, not the API server's."""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
import urllib.request
from typing import Any

import aiohttp

import taskorch
from taskorch.server.auth import Action, Caller
from tests.support import free_port

NS, TOKEN = "bench", "bench-token"
CALLER = Caller("bench")
HTTP_CONCURRENCY = 16  # client connections for one-task-a-request submits


class AllowAll:
    async def review_token(self, token: str) -> Caller | None:
        return CALLER if token == TOKEN else None

    async def review_access(self, caller: Caller, action: Action) -> tuple[bool, str]:
        return True, ""

    async def whoami(self) -> Caller:
        return CALLER


def _serve(redis_url: str, port: int) -> None:
    import uvicorn

    from taskorch.server.app import create_app
    from taskorch.server.auth import Gate
    from taskorch.settings import Settings

    app = create_app(Settings(redis_url=redis_url), Gate(AllowAll()), kube=None)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", loop="uvloop")


def _start(redis_url: str) -> tuple[multiprocessing.Process, str]:
    port = free_port()
    proc = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(redis_url, port), daemon=True
    )
    proc.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("taskorch server did not start")


async def _sdk(redis_url: str, n: int, batch: bool) -> float:
    async with taskorch.Client(redis_url, namespace=NS, queue="sdk") as client:
        payloads = [{"i": i} for i in range(n)]
        t0 = time.perf_counter()
        if batch:
            await client.enqueue_many("noop", payloads)
        else:
            sem = asyncio.Semaphore(HTTP_CONCURRENCY)

            async def one(p: dict[str, int]) -> None:
                async with sem:
                    await client.enqueue("noop", p)

            await asyncio.gather(*(one(p) for p in payloads))
        return n / (time.perf_counter() - t0)


async def _http(url: str, n: int, batch: bool) -> float:
    """aiohttp as the client: httpx's own overhead would dominate a one-task request."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=HTTP_CONCURRENCY)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector) as c:
        path = f"/api/v1/namespaces/{NS}/tasks"
        t0 = time.perf_counter()
        if batch:
            for start in range(0, n, 1000):
                tasks = [
                    {"type": "noop", "queue": "http", "payload": {"i": i}}
                    for i in range(start, min(n, start + 1000))
                ]
                async with c.post(f"{path}/batch", json={"tasks": tasks}) as r:
                    r.raise_for_status()
        else:

            async def submitter(ids: range) -> None:
                for i in ids:
                    body = {"type": "noop", "queue": "http", "payload": {"i": i}}
                    async with c.post(path, json=body) as r:
                        r.raise_for_status()

            await asyncio.gather(
                *(submitter(range(k, n, HTTP_CONCURRENCY)) for k in range(HTTP_CONCURRENCY))
            )
        return n / (time.perf_counter() - t0)


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values)),
        "median": round(statistics.median(values)),
        "max": round(max(values)),
    }


async def _pages(url: str, task_id: str, rounds: int) -> dict[str, dict[str, float]]:
    pages = {
        "queues": f"/ns/{NS}/queues",
        "tasks_recent": f"/ns/{NS}/tasks?queue=big",
        "tasks_queued_offset_50000": f"/ns/{NS}/tasks?queue=big&state=queued&offset=50000",
        "task_detail": f"/ns/{NS}/tasks/{task_id}?queue=big",
        "api_queue_stats": f"/api/v1/namespaces/{NS}/queues/big",
    }
    out = {}
    async with aiohttp.ClientSession(url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        for name, path in pages.items():
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                async with c.get(path) as r:
                    await r.read()
                    r.raise_for_status()
                times.append((time.perf_counter() - t0) * 1000)
            times.sort()
            out[name] = {
                "p50_ms": round(statistics.median(times), 2),
                "p95_ms": round(times[int(len(times) * 0.95) - 1], 2),
            }
    return out


def run(
    redis_url: str, n_submit: int = 20_000, n_single: int = 5_000, runs: int = 3
) -> dict[str, Any]:
    proc, url = _start(redis_url)
    try:
        figures: dict[str, Any] = {}
        for mode, n, batch in (("single", n_single, False), ("batch", n_submit, True)):
            sdk, http = [], []
            for _ in range(runs):  # interleaved, so drift hits both alike
                sdk.append(asyncio.run(_sdk(redis_url, n, batch)))
                http.append(asyncio.run(_http(url, n, batch)))
            figures[f"submit_{mode}"] = {
                "tasks": n,
                "sdk_tasks_per_s": _spread(sdk),
                "http_tasks_per_s": _spread(http),
                "http_vs_sdk": round(statistics.median(http) / statistics.median(sdk), 2),
                "concurrency": HTTP_CONCURRENCY if not batch else 1,
            }

        async def fill() -> str:
            async with taskorch.Client(redis_url, namespace=NS, queue="big") as client:
                ids = await client.enqueue_many("noop", [{"i": i} for i in range(100_000)])
                return ids[len(ids) // 2]

        task_id = asyncio.run(fill())
        figures["dashboard_100k_queued"] = asyncio.run(_pages(url, task_id, 200))
        return figures
    finally:
        proc.terminate()
        proc.join(10)
