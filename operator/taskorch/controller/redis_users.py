"""Per-namespace Redis users (`TASKORCH_REDIS_ACL`): for every namespace the operator serves, a
Redis ACL user that reaches only that namespace's keys with only the commands workers and the
SDK send, and a Secret in the namespace with its credentials for the namespace's workers. Team
A's worker then gets NOPERM on team B's payloads.

The password is made once and kept in the Secret; the user is (re)written from it on first
sight of the namespace and every `REFRESH_SECONDS`, because ACL users set at runtime live in
each Redis node's memory only (a restarted or new node has none until the next refresh)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import kopf

from taskorch.api.base import GROUP, VERSION
from taskorch.controller.kube import Kube
from taskorch.queue import keys
from taskorch.queue.connection import RedisClient, on_every_node

log = logging.getLogger("taskorch.redis_users")
SECRET = "taskorch-redis-user"
REFRESH_SECONDS = 60.0
LABELS = {"app.kubernetes.io/part-of": "taskorch", "app.kubernetes.io/component": "redis-user"}

# What a worker, its handlers' SDK calls and `taskorch.Client` send, and nothing else: no SCAN
# or KEYS (they would list other namespaces' key names), no CONFIG, no FLUSH*.
COMMAND_GROUPS = (
    # connecting: HELLO/AUTH/PING/SELECT by redis-py (it shrugs off a refused CLIENT SETINFO),
    # CLUSTER and COMMAND by its cluster client, READONLY when reading from replicas
    "hello auth ping select echo client|setname client|id quit reset readonly",
    "cluster|slots cluster|shards cluster|nodes cluster|myid",
    "command command|docs command|info command|count",
    # pipelines and the Lua scripts (redis-py loads them on a NOSCRIPT)
    "multi exec discard evalsha eval script|load script|exists",
    # the scripts' own commands, and the Python side's
    "decr del exists expire pexpire persist get set incr time",
    "hdel hexists hget hgetall hincrby hmget hset hsetnx",
    "lindex llen lpop lmpop lpush rpush blpop sadd xadd",
    "zadd zcard zcount zrange zrem zremrangebyrank zremrangebyscore",
)
COMMANDS = " ".join(COMMAND_GROUPS).split()


def username(namespace: str) -> str:
    return f"taskorch-{namespace}"


def acl_rules(namespace: str, password: str) -> list[str]:
    """`ACL SETUSER` rules: from scratch (`reset`), so a rule removed here is removed there."""
    return [
        "reset",
        "on",
        f">{password}",
        # the namespace's queues `{ns/queue}` and its worker presence `{ns}`
        f"~{keys.ROOT}:{{{namespace}/*",
        f"~{keys.ROOT}:{{{namespace}}}:*",
        # the queue registry: an SDK enqueue adds its queue; reading it would list every team's
        f"%W~{keys.QUEUES}",
        "resetchannels",
        "-@all",
        *(f"+{c}" for c in COMMANDS),
    ]


class RedisUsers:
    def __init__(self, redis: RedisClient, kube: Kube) -> None:
        self.redis = redis
        self.kube = kube
        self.namespaces: set[str] = set()

    async def seen(self, namespace: str) -> None:
        """Make the namespace's user at once the first time it is seen."""
        if namespace not in self.namespaces:
            await self.ensure(namespace)
            self.namespaces.add(namespace)

    async def ensure(self, namespace: str) -> None:
        password = await self._password(namespace)
        await on_every_node(
            self.redis, "ACL", "SETUSER", username(namespace), *acl_rules(namespace, password)
        )

    async def run(self, namespaces: list[str]) -> None:
        """Make the users of the namespaces the operator was told to watch, then rewrite every
        known namespace's user now and then (a restarted node forgets them)."""
        self.namespaces.update(namespaces)
        while True:
            for namespace in sorted(self.namespaces):
                try:
                    await self.ensure(namespace)
                except Exception as e:  # Redis or the API server: retried at the next round
                    log.warning("could not refresh the Redis user of %s: %s", namespace, e)
            await asyncio.sleep(REFRESH_SECONDS)

    async def _password(self, namespace: str) -> str:
        """The Secret's password; a new one (and the Secret) when there is none."""
        try:
            return await self.kube.read_key(namespace, "secret", SECRET, "password")
        except KeyError:
            pass
        data = {"username": username(namespace), "password": secrets.token_urlsafe(32)}
        if await self.kube.create_secret(namespace, SECRET, data, LABELS):
            log.info("created the Redis user Secret %s/%s", namespace, SECRET)
            return data["password"]
        # Another replica created it first: use theirs.
        return await self.kube.read_key(namespace, "secret", SECRET, "password")


async def _seen(memo: kopf.Memo, namespace: str | None, **_: Any) -> None:
    users: RedisUsers | None = memo.get("redis_users")
    if users is not None and namespace:
        await users.seen(namespace)


# Any taskorch object in a namespace makes its user (a namespace's workers serve its objects);
# Tasks, which kopf does not watch, through controller/task_watch.py.
for _plural in ("workflows", "taskqueues", "schedules", "workerpools"):
    kopf.on.event(GROUP, VERSION, _plural, id="redis-user")(_seen)
