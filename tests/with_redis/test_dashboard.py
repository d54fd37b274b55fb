"""The dashboard's pages, sign-in and actions on a real redis-server, with the Kubernetes
reviews answered by a table (the browser and the real reviews: tests/e2e/test_dashboard.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from taskorch.queue.broker import Broker
from taskorch.queue.model import Outcome, Settlement
from tests.with_redis.test_server_api import ALICE_H, TASKS, TableReviewer, client_for

HX = {"HX-Request": "true"}


@pytest.fixture
def ui(redis_url: str) -> Iterator[TestClient]:
    with client_for(redis_url, TableReviewer()) as c:
        yield c


def sign_in(ui: TestClient, token: str = "alice-token") -> None:
    r = ui.post("/login", data={"token": token}, follow_redirects=False)
    assert r.status_code == 303, r.text


def test_pages_need_a_token_and_the_cookie_never_authenticates_the_api(ui: TestClient) -> None:
    r = ui.get("/ns/team-a/queues", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    bad = ui.post("/login", data={"token": "forged"})
    assert bad.status_code == 401 and "does not accept this token" in bad.text
    sign_in(ui)
    cookie = ui.cookies.jar
    [c] = [c for c in cookie if c.name == "taskorch_token"]
    assert c.has_nonstandard_attr("HttpOnly") and c.get_nonstandard_attr("SameSite") == "strict"
    assert ui.get("/ns/team-a/queues").status_code == 200
    # The API takes bearer tokens only: a cookie riding along a cross-site request gets nothing.
    assert ui.post(TASKS, json={"type": "x"}).status_code == 401


def test_task_pages_show_the_task_and_forbidden_pages_say_why(ui: TestClient) -> None:
    sub = ui.post(TASKS, json={"type": "resize", "payload": {"w": 3}}, headers=ALICE_H).json()
    sign_in(ui)
    page = ui.get("/ns/team-a/tasks?queue=default&state=queued").text
    assert f'data-id="{sub["id"]}"' in page and "resize" in page
    detail = ui.get(f"/ns/team-a/tasks/{sub['id']}?queue=default").text
    assert 'id="task-state">queued<' in detail and "&#34;w&#34;: 3" in detail
    found = ui.get(f"/ns/team-a/tasks?id={sub['id']}", follow_redirects=False)
    assert found.headers["location"] == f"/ns/team-a/tasks/{sub['id']}?queue=default"
    r = ui.get("/ns/team-b/tasks")
    assert (
        r.status_code == 403
        and "alice may not list tasks.taskorch.io in namespace team-b" in r.text
    )


def test_actions_come_only_from_the_page_and_delete_only_finished_tasks(
    ui: TestClient, redis_url: str
) -> None:
    ids = [
        t["id"]
        for t in ui.post(
            f"{TASKS}/batch", json={"tasks": [{"type": "a"}, {"type": "b"}]}, headers=ALICE_H
        ).json()["tasks"]
    ]
    sign_in(ui)
    url = f"/ns/team-a/tasks/{ids[0]}/delete?queue=default"
    assert ui.post(url).status_code == 400  # a cross-site form cannot send HX-Request
    refused = ui.post(url, headers=HX)
    assert "error" in refused.text and "cancel it before deleting it" in refused.text

    async def finish_first() -> None:
        broker = Broker.from_url(redis_url)
        [a] = (await broker.settle_claim("team-a", "default", "w", [], 1)).claimed
        await broker.settle_claim(
            "team-a", "default", "w", [Settlement(a.id, a.fence, Outcome.ok)], 0
        )
        await broker.close()

    asyncio.run(finish_first())
    done = ui.get("/ns/team-a/tasks?queue=default&state=done").text
    assert f'data-id="{ids[0]}"' in done
    assert "deleted" in ui.post(url, headers=HX).text
    assert ui.get(f"{TASKS}/{ids[0]}", headers=ALICE_H).status_code == 404
    assert "paused team-a/default" in ui.post("/ns/team-a/queues/default/pause", headers=HX).text


def test_bad_filters_are_refused_not_a_500(ui: TestClient) -> None:
    sign_in(ui)
    assert ui.get("/ns/team-a/tasks?state=bogus").status_code == 422
    assert ui.get("/ns/team-a/tasks?type=x%26queue%3Dprod").status_code == 422
    assert ui.get("/ns/Team_A/queues").status_code == 422


async def test_a_live_section_ends_when_its_token_stops_working(redis_url: str) -> None:
    import httpx

    from taskorch.server.app import create_app
    from taskorch.server.auth import Gate
    from taskorch.settings import Settings

    reviewer = TableReviewer()
    app = create_app(Settings(redis_url=redis_url), Gate(reviewer, cache_seconds=0.05), None)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            stream = asyncio.ensure_future(c.get("/ns/team-a/live/queues", headers=ALICE_H))
            await asyncio.sleep(0.3)
            assert not stream.done()  # streaming while the token works
            del reviewer.tokens["alice-token"]  # revoked (or expired)
            r = await asyncio.wait_for(stream, 5)
    events = [line for line in r.text.splitlines() if line.startswith("data:")]
    assert "does not accept this token (TokenReview)" in events[-1]
