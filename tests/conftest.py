"""Fixtures every tier uses: a real redis-server per session, flushed per test; and a real
Redis Cluster (3 primaries, 3 replicas) for the tests that run on both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from taskorch.queue.connection import RedisClient, connect
from taskorch.settings import Settings
from tests.support import RedisClusterServer, RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if not redis_server.ping():  # a test may have stopped it on purpose
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServer]:
    cluster = RedisClusterServer(Path(tmp_path_factory.mktemp("redis-cluster")))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: RedisClusterServer) -> str:
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture(params=["redis", "cluster"])
async def any_redis(request: pytest.FixtureRequest) -> AsyncIterator[RedisClient]:
    """The same test on one redis-server and on a Redis Cluster (modules opt in by using it
    as their `aredis`)."""
    url = request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")
    client = connect(url, Settings())
    yield client
    await client.aclose()
