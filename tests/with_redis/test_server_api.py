"""The HTTP API on a real redis-server, with the Kubernetes reviews answered by a table (the
real TokenReview/SubjectAccessReview path is in tests/e2e/test_server.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from taskorch.queue import keys
from taskorch.queue.broker import Broker
from taskorch.queue.model import Outcome, Settlement, TaskRequest, now_ms
from taskorch.server.app import create_app
from taskorch.server.auth import Action, Caller, Gate
from taskorch.settings import Settings
from tests.support import broker_call

ALICE = Caller("alice", groups=("devs",))
BOB = Caller("bob")
SERVER = Caller("system:serviceaccount:taskorch:taskorch-server")


class TableReviewer:
    """Tokens and RBAC as a table; counts the reviews it answers."""

    def __init__(self) -> None:
        self.tokens = {"alice-token": ALICE, "bob-token": BOB}
        self.rules = {
            ("alice", "team-a", verb, res)
            for verb in ("create", "get", "list", "update", "delete")
            for res in ("tasks", "taskqueues")
        } | {("bob", "team-a", "get", "tasks"), (SERVER.username, "team-a", "get", "tasks")}
        self.reviews = 0

    async def review_token(self, token: str) -> Caller | None:
        self.reviews += 1
        return self.tokens.get(token)

    async def review_access(self, caller: Caller, action: Action) -> tuple[bool, str]:
        self.reviews += 1
        allowed = (caller.username, action.namespace, action.verb, action.resource) in self.rules
        return allowed, "" if allowed else "no RBAC rule allows it"

    async def whoami(self) -> Caller:
        return SERVER


def client_for(redis_url: str, reviewer: TableReviewer, **gate: bool) -> TestClient:
    settings = Settings(redis_url=redis_url)
    return TestClient(create_app(settings, Gate(reviewer, **gate), kube=None))


@pytest.fixture
def reviewer() -> TableReviewer:
    return TableReviewer()


@pytest.fixture
def api(redis_url: str, reviewer: TableReviewer) -> Iterator[TestClient]:
    with client_for(redis_url, reviewer) as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ALICE_H, BOB_H = auth("alice-token"), auth("bob-token")
TASKS = "/api/v1/namespaces/team-a/tasks"


def test_submit_then_get_returns_the_queued_task(api: TestClient) -> None:
    r = api.post(
        TASKS,
        json={"type": "resize", "payload": {"w": 3}, "priority": "high", "queue": "img"},
        headers=ALICE_H,
    )
    assert r.status_code == 201, r.text
    sub = r.json()
    assert sub["queue"] == "img" and sub["namespace"] == "team-a"
    got = api.get(sub["url"], headers=ALICE_H).json()
    assert got["id"] == sub["id"]
    assert (got["type"], got["state"], got["payload"]) == ("resize", "queued", {"w": 3})
    assert got["finished"] is False


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"payload": {}}, ["body"], "set exactly one of type (a handler), command and container"),
        ({"type": "x", "priority": "urgent"}, ["body", "priority"], "'high'"),
        ({"type": "x", "retry": {"maxAttempts": 0}}, ["body", "retry", "maxAttempts"], "1"),
        ({"type": "x", "timeout": "soon"}, ["body", "timeout"], "pattern"),
        ({"type": "x", "priorty": 3}, ["body", "priorty"], "Extra inputs"),
        ({"type": "x", "payloadFrom": []}, ["body"], "payloadFrom"),
        ({"type": "x", "payload": {"b": "x" * 70_000}}, ["body", "payload"], "over 65536"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(
    api: TestClient, body: dict[str, object], field: list[str], words: str
) -> None:
    r = api.post(TASKS, json=body, headers=ALICE_H)
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert any(e["loc"][: len(field)] == field and words in e["msg"] for e in errors), errors
    assert api.get("/api/v1/namespaces/team-a/queues", headers=ALICE_H).json() == []


def test_no_token_is_401_and_an_unknown_token_too(api: TestClient) -> None:
    r = api.post(TASKS, json={"type": "x"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "kubectl create token" in r.json()["detail"]
    assert api.get(f"{TASKS}/abc", headers=auth("forged")).status_code == 401


def test_rbac_decides_per_action_and_namespace(api: TestClient) -> None:
    task_id = api.post(TASKS, json={"type": "x"}, headers=ALICE_H).json()["id"]
    assert api.get(f"{TASKS}/{task_id}", headers=BOB_H).status_code == 200
    r = api.post(TASKS, json={"type": "x"}, headers=BOB_H)
    assert r.status_code == 403
    assert r.json()["detail"].startswith("bob may not create tasks.taskorch.io in namespace team-a")
    assert api.post(f"{TASKS}/{task_id}/cancel", headers=BOB_H).status_code == 403
    # Namespace B: alice may not even read, and nothing leaks whether the task exists there.
    other = f"/api/v1/namespaces/team-b/tasks/{task_id}"
    assert api.get(other, headers=ALICE_H).status_code == 403
    assert api.post("/api/v1/namespaces/team-b/tasks", json={}, headers=ALICE_H).status_code == 403


def test_reviews_are_cached_for_a_few_seconds(api: TestClient, reviewer: TableReviewer) -> None:
    task_id = api.post(TASKS, json={"type": "x"}, headers=ALICE_H).json()["id"]
    before = reviewer.reviews
    for _ in range(5):
        assert api.get(f"{TASKS}/{task_id}", headers=ALICE_H).status_code == 200
    assert reviewer.reviews - before == 1  # one SubjectAccessReview for get; token cached


def test_batch_submit_keeps_order_across_queues_and_names_the_bad_item(api: TestClient) -> None:
    tasks = [{"type": "a", "queue": q, "payload": {"i": i}} for i, q in enumerate("xyxy")]
    r = api.post(f"{TASKS}/batch", json={"tasks": tasks}, headers=ALICE_H)
    assert r.status_code == 201, r.text
    out = r.json()["tasks"]
    assert [t["queue"] for t in out] == list("xyxy")
    for i, t in enumerate(out):
        assert api.get(t["url"], headers=ALICE_H).json()["payload"] == {"i": i}
    bad = [{"type": "a"}, {"type": "a", "maxConcurrent": 0}]
    r = api.post(f"{TASKS}/batch", json={"tasks": bad}, headers=ALICE_H)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "tasks", 1, "maxConcurrent"]


def test_idempotency_key_header_returns_the_first_task(api: TestClient) -> None:
    h = {**ALICE_H, "Idempotency-Key": "order-42"}
    first = api.post(TASKS, json={"type": "x"}, headers=h).json()["id"]
    again = api.post(TASKS, json={"type": "x"}, headers=h).json()["id"]
    assert first == again


async def test_wait_long_polls_until_the_task_finishes(
    redis_url: str, reviewer: TableReviewer
) -> None:
    import asyncio

    import httpx

    app = create_app(Settings(redis_url=redis_url), Gate(reviewer), kube=None)
    broker = Broker.from_url(redis_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            task_id = (await c.post(TASKS, json={"type": "x"}, headers=ALICE_H)).json()["id"]
            r = await c.get(f"{TASKS}/{task_id}/wait?timeout=0.2", headers=ALICE_H)
            assert r.json()["finished"] is False

            async def worker() -> None:
                claimed = await broker.settle_claim("team-a", "default", "w1", [], 1)
                [a] = claimed.claimed
                await asyncio.sleep(0.3)  # the waiter must be waiting while it runs
                ok = Settlement(a.id, a.fence, Outcome.ok, '{"done": true}')
                await broker.settle_claim("team-a", "default", "w1", [ok], 0)

            waiter = c.get(f"{TASKS}/{task_id}/wait?timeout=10", headers=ALICE_H)
            r, _ = await asyncio.gather(waiter, worker())
            body = r.json()
            assert (body["state"], body["finished"], body["result"]) == (
                "succeeded",
                True,
                {"done": True},
            )
    await broker.close()


def test_dead_letter_list_requeue_and_purge(api: TestClient, redis_url: str) -> None:
    import asyncio

    async def kill_all(n: int) -> None:
        broker = Broker.from_url(redis_url)
        claimed = await broker.settle_claim("team-a", "default", "w1", [], n)
        dead = [
            Settlement(a.id, a.fence, Outcome.dead, '{"type": "Boom"}') for a in claimed.claimed
        ]
        await broker.settle_claim("team-a", "default", "w1", dead, 0)
        await broker.close()

    tasks = [{"type": "keep" if i % 2 else "drop"} for i in range(6)]
    ids = [
        t["id"]
        for t in api.post(f"{TASKS}/batch", json={"tasks": tasks}, headers=ALICE_H).json()["tasks"]
    ]
    asyncio.run(kill_all(6))
    dead_url = "/api/v1/namespaces/team-a/queues/default/dead"
    page = api.get(f"{dead_url}?limit=4", headers=ALICE_H).json()
    assert len(page) == 4 and all(t["state"] == "dead" for t in page)
    assert api.get("/api/v1/namespaces/team-a/queues/default", headers=ALICE_H).json()["dead"] == 6

    one = api.post(f"{TASKS}/{ids[0]}/requeue", headers=ALICE_H)
    assert one.status_code == 200 and one.json()["state"] == "queued"
    again = api.post(f"{TASKS}/{ids[0]}/requeue", headers=ALICE_H)
    assert again.status_code == 409 and "not dead" in again.json()["detail"]

    r = api.post(f"{dead_url}/requeue", json={"all": True, "type": "keep"}, headers=ALICE_H)
    assert sorted(r.json()["requeued"]) == sorted(ids[1::2])
    assert api.delete(dead_url, headers=ALICE_H).json() == {"purged": 2}
    assert api.get(dead_url, headers=ALICE_H).json() == []


def test_pause_and_resume_a_queue(api: TestClient) -> None:
    q = "/api/v1/namespaces/team-a/queues/default"
    assert api.post(f"{q}/pause", headers=ALICE_H).json()["paused"] is True
    assert api.get(q, headers=ALICE_H).json()["paused"] is True
    assert api.post(f"{q}/resume", headers=ALICE_H).json()["paused"] is False


def test_read_only_refuses_every_change_whatever_rbac_says(
    redis_url: str, reviewer: TableReviewer
) -> None:
    with client_for(redis_url, reviewer, read_only=True) as api:
        r = api.post(TASKS, json={"type": "x"}, headers=ALICE_H)
        assert r.status_code == 403 and "read-only" in r.json()["detail"]
        assert api.get("/api/v1/namespaces/team-a/queues", headers=ALICE_H).status_code == 200


def test_anonymous_read_reads_as_the_server_and_never_writes(
    redis_url: str, reviewer: TableReviewer
) -> None:
    with client_for(redis_url, reviewer, anonymous_read=True) as api:
        task_id = api.post(TASKS, json={"type": "x"}, headers=ALICE_H).json()["id"]
        assert api.get(f"{TASKS}/{task_id}").status_code == 200  # the server's own RBAC
        r = api.post(TASKS, json={"type": "x"})
        assert r.status_code == 403 and "anonymous access is read-only" in r.json()["detail"]
        # where the server's account may not read, neither may anonymous callers
        assert api.get("/api/v1/namespaces/team-a/queues").status_code == 403


def test_openapi_schema_documents_the_routes(api: TestClient) -> None:
    schema = api.get("/openapi.json").json()
    paths = schema["paths"]
    assert "/api/v1/namespaces/{namespace}/tasks" in paths
    assert "create tasks" in paths["/api/v1/namespaces/{namespace}/tasks"]["post"]["summary"]
    assert "SubmitTask" in schema["components"]["schemas"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", f"{TASKS}", {"type": "x"}),
        ("POST", f"{TASKS}/batch", {"tasks": [{"type": "x"}]}),
        ("POST", f"{TASKS}/some-id/cancel", None),
        ("POST", f"{TASKS}/some-id/requeue", None),
        ("DELETE", f"{TASKS}/some-id", None),
        ("GET", "/api/v1/namespaces/team-a/queues", None),
        ("GET", "/api/v1/namespaces/team-a/queues/default", None),
        ("POST", "/api/v1/namespaces/team-a/queues/default/pause", None),
        ("POST", "/api/v1/namespaces/team-a/queues/default/resume", None),
        ("GET", "/api/v1/namespaces/team-a/queues/default/dead", None),
        ("POST", "/api/v1/namespaces/team-a/queues/default/dead/requeue", {"all": True}),
        ("DELETE", "/api/v1/namespaces/team-a/queues/default/dead", None),
    ],
)
def test_every_route_but_get_is_refused_to_a_reader(
    api: TestClient, method: str, path: str, body: object
) -> None:
    """bob may only `get tasks` in team-a: everything else is a 403 naming what is missing."""
    r = api.request(method, path, json=body, headers=BOB_H)
    assert r.status_code == 403, r.text
    assert r.json()["detail"].startswith("bob may not ")


def test_payload_fields_from_secrets_never_leave_the_server(
    api: TestClient, redis_url: str
) -> None:
    request = TaskRequest(
        type="login", payload={"user": "u", "password": "hunter2-secret"}, redact=("password",)
    )
    [task_id] = broker_call(redis_url, lambda b: b.enqueue_many("team-a", "default", [request]))
    got = api.get(f"{TASKS}/{task_id}", headers=ALICE_H).json()
    assert got["payload"] == {"user": "u", "password": "<redacted>"}
    api.cookies.set("taskorch_token", "alice-token")
    page = api.get(f"/ns/team-a/tasks/{task_id}?queue=default").text
    assert "hunter2-secret" not in page and "&lt;redacted&gt;" in page


def test_requeue_all_takes_the_dead_letter_queue_as_it_was(api: TestClient, redis_url: str) -> None:
    """A task that dies again while requeue-all runs (a later dead-letter time) is not
    requeued again by the same call: the call ends whatever the handlers do."""
    import asyncio

    async def kill_all(n: int) -> list[str]:
        broker = Broker.from_url(redis_url)
        claimed = (await broker.settle_claim("team-a", "default", "w", [], n)).claimed
        dead = [Settlement(a.id, a.fence, Outcome.dead, '{"type": "Boom"}') for a in claimed]
        await broker.settle_claim("team-a", "default", "w", dead, 0)
        await broker.redis.zadd(  # the first one "died again" after the call began
            keys.dead("team-a", "default"), {claimed[0].id: now_ms() + 60_000}, xx=True
        )
        await broker.close()
        return [a.id for a in claimed]

    api.post(f"{TASKS}/batch", json={"tasks": [{"type": "x"}] * 3}, headers=ALICE_H)
    ids = asyncio.run(kill_all(3))
    r = api.post(
        "/api/v1/namespaces/team-a/queues/default/dead/requeue", json={"all": True}, headers=ALICE_H
    )
    assert sorted(r.json()["requeued"]) == sorted(ids[1:])
    dead = api.get("/api/v1/namespaces/team-a/queues/default/dead", headers=ALICE_H).json()
    assert [t["id"] for t in dead] == ids[:1]


def test_a_task_object_or_workflow_step_is_deleted_through_its_object(
    api: TestClient, redis_url: str
) -> None:
    import asyncio

    requests = [TaskRequest(type="x", cr_name="nightly"), TaskRequest(type="x", workflow="wf/uid")]
    ids = broker_call(redis_url, lambda b: b.enqueue_many("team-a", "default", requests))

    async def finish() -> None:
        broker = Broker.from_url(redis_url)
        claimed = (await broker.settle_claim("team-a", "default", "w", [], 2)).claimed
        ok = [Settlement(a.id, a.fence, Outcome.ok) for a in claimed]
        await broker.settle_claim("team-a", "default", "w", ok, 0)
        await broker.close()

    asyncio.run(finish())
    r = api.delete(f"{TASKS}/{ids[0]}", headers=ALICE_H)
    assert r.status_code == 409 and "delete that object instead" in r.json()["detail"]
    r = api.delete(f"{TASKS}/{ids[1]}", headers=ALICE_H)
    assert r.status_code == 409 and "a step of workflow wf" in r.json()["detail"]
