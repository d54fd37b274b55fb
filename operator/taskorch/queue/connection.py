"""One Redis client for every part of taskorch: a plain client, or a Redis Cluster client when
the settings or the URL say so. Every command taskorch sends stays in one queue's slot (or is
the registry's single key), so the same code runs on both."""

from __future__ import annotations

import logging
from typing import Any, TypeAlias

import redis.asyncio as aioredis
import redis.exceptions

from taskorch.settings import Settings

log = logging.getLogger("taskorch.redis")
RedisClient: TypeAlias = aioredis.Redis | aioredis.RedisCluster
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def connect(url: str, settings: Settings, **kw: Any) -> RedisClient:
    """A client for `url` with the password and TLS CA of `settings` when they are set."""
    if settings.redis_username:
        kw.setdefault("username", settings.redis_username)
    if settings.redis_password is not None:
        kw.setdefault("password", settings.redis_password.get_secret_value())
    if settings.redis_tls_ca_file:
        kw.setdefault("ssl_ca_certs", settings.redis_tls_ca_file)
    kw.setdefault("socket_timeout", settings.redis_socket_timeout)
    kw.setdefault("socket_connect_timeout", settings.redis_socket_timeout)
    kw.setdefault("socket_keepalive", True)
    scheme, sep, rest = url.partition("://")
    if scheme in CLUSTER_SCHEMES or settings.redis_cluster:
        kw.pop("health_check_interval", None)  # not a cluster client option
        return aioredis.RedisCluster.from_url(
            f"{CLUSTER_SCHEMES.get(scheme, scheme)}{sep}{rest}", **kw
        )
    return aioredis.Redis.from_url(url, **kw)


async def on_every_node(client: RedisClient, *command: str) -> None:
    """Run a node-local command (ACL SETUSER) on one Redis, or on every node of a Cluster,
    replicas included, so a promoted replica has it too."""
    if isinstance(client, aioredis.RedisCluster):
        # The node list, not the ALL_NODES flag: redis-py routes a flagged ACL command by key.
        await client.initialize()  # a client that has sent nothing yet knows only its seed
        await client.execute_command(*command, target_nodes=client.get_nodes())
    else:
        await client.execute_command(*command)  # type: ignore[no-untyped-call]


async def warn_unless_noeviction(client: RedisClient) -> None:
    """Redis must not evict taskorch's keys: an evicted task hash or lease is a lost task. Warn
    at start when maxmemory-policy says otherwise (managed Redis may forbid CONFIG: then say
    nothing)."""
    try:
        reply: Any = await client.config_get("maxmemory-policy")
    except redis.exceptions.RedisError:
        return
    if isinstance(reply, dict) and "maxmemory-policy" not in reply:
        reply = next(iter(reply.values()), {})  # a cluster client answers per node
    policy = reply.get("maxmemory-policy") if isinstance(reply, dict) else None
    if isinstance(policy, bytes):
        policy = policy.decode()
    if policy and policy != "noeviction":
        log.warning(
            "redis maxmemory-policy is %r: under memory pressure Redis may evict tasks and "
            "leases, which loses work; set it to noeviction",
            policy,
        )
