"""Per-namespace Redis ACL users on a real redis-server and a real Redis Cluster: a worker with
namespace A's user runs A's tasks (claims, heartbeats, settles, presence, SDK calls) and gets
NOPERM on everything of namespace B and on the commands that would reach across namespaces.
The Secret side is a fake here; tests/e2e/test_redis_acl.py runs it with the real API server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest
import redis.exceptions

import taskorch
from taskorch.controller.kube import Kube
from taskorch.controller.redis_users import SECRET, RedisUsers, username
from taskorch.queue import keys
from taskorch.queue.broker import Broker
from taskorch.queue.connection import RedisClient, connect, on_every_node
from taskorch.queue.model import State, TaskRequest
from taskorch.settings import Settings
from taskorch.worker.presence import Presence
from taskorch.worker.runner import Worker
from tests.support import async_wait_for

A, B, Q = "team-a", "team-b", "default"


class FakeSecrets:
    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}

    async def read_key(self, namespace: str, kind: str, name: str, key: str) -> str:
        try:
            return self.secrets[namespace, name][key]
        except KeyError as e:
            raise KeyError(f"secret {namespace}/{name}") from e

    async def create_secret(
        self, namespace: str, name: str, data: dict[str, str], labels: dict[str, str]
    ) -> bool:
        if (namespace, name) in self.secrets:
            return False
        self.secrets[namespace, name] = dict(data)
        return True


@pytest.fixture(params=["redis", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url"))


@pytest.fixture
async def admin(url: str) -> AsyncIterator[RedisClient]:
    client = connect(url, Settings())
    yield client
    for ns in (A, B):
        await on_every_node(client, "ACL", "DELUSER", username(ns))
    await client.aclose()


async def as_user(url: str, secrets: FakeSecrets, namespace: str) -> Broker:
    creds = secrets.secrets[namespace, SECRET]
    settings = Settings(redis_username=creds["username"], redis_password=creds["password"])
    return Broker(connect(url, settings), settings)


async def test_a_namespace_user_runs_its_work_and_cannot_reach_another_namespace(
    url: str, admin: RedisClient
) -> None:
    secrets = FakeSecrets()
    users = RedisUsers(admin, cast(Kube, secrets))
    for ns in (A, B):
        await users.ensure(ns)
    assert secrets.secrets[A, SECRET]["username"] == "taskorch-team-a"
    operator = Broker(admin)
    [b_task] = await operator.enqueue_many(B, Q, [TaskRequest("secret", payload={"pw": "hunter2"})])

    team_a = await as_user(url, secrets, A)
    try:
        app = taskorch.App()

        @app.handler("double")
        async def double(ctx: taskorch.Context, payload: int) -> int:
            ctx.progress(50)
            return payload * 2

        # SDK calls from inside the namespace: enqueue (registers the queue), get.
        ids = await team_a.enqueue_many(A, Q, [TaskRequest("double", payload=i) for i in range(20)])
        worker = Worker(app, team_a, namespace=A, queues=Q, concurrency=4)
        presence = Presence(worker, pod="pod-a")
        running = [asyncio.create_task(worker.run()), asyncio.create_task(presence.run())]
        try:

            async def all_done() -> bool:
                infos = [await team_a.get(A, Q, i) for i in ids]
                return all(i is not None and i.state == State.succeeded for i in infos)

            await async_wait_for(all_done, timeout=20, what="team-a's tasks run by its user")
            await async_wait_for(
                lambda: admin.exists(keys.worker(A, worker.name)),
                timeout=10,
                what="the worker's presence, written by its user",
            )
        finally:
            worker.drain()
            for t in running:
                t.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        assert f"{A}/{Q}".encode() in await admin.smembers(keys.QUEUES)

        # Namespace B: its task, its queue's scripts, its config, its worker presence.
        b = team_a.redis
        for denied in (
            lambda: team_a.get(B, Q, b_task),
            lambda: team_a.settle_claim(B, Q, "thief", [], 1),
            lambda: team_a.enqueue_many(B, Q, [TaskRequest("x")]),
            lambda: b.hgetall(keys.config(B, Q)),
            lambda: b.zrange(keys.workers(B), 0, -1),
            # across namespaces: the registry's contents, key names, server admin
            lambda: b.smembers(keys.QUEUES),
            lambda: b.scan(0),
            lambda: b.keys("*"),
            lambda: b.config_get("maxmemory-policy"),
            lambda: b.flushall(),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                await denied()
        info = await operator.get(B, Q, b_task)
        assert info is not None and info.state == State.queued  # untouched

        # The operator's refresh keeps the password: connected workers carry on.
        await users.ensure(A)
        assert await team_a.get(A, Q, ids[0]) is not None
    finally:
        await team_a.close()
