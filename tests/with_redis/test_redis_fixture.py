"""The Redis fixture is a real server with AOF: what is written survives a restart."""

import redis

from tests.support import RedisServer


def test_write_survives_restart(redis_server: RedisServer, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    r.set("survivor", "yes")
    r.close()
    redis_server.restart()
    r = redis.Redis.from_url(redis_server.url)
    assert r.get("survivor") == b"yes"
    r.close()
