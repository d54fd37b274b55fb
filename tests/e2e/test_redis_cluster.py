"""taskorch on a real Redis Cluster (3 primaries, 3 replicas, on loopback): Task CRs on queues
spread over the three shards, and a primary killed mid-run (its replica promoted) with nothing
lost. The queue scripts and the worker run on the cluster in tests/with_redis too."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from taskorch.queue import keys
from taskorch.queue.broker import Broker
from taskorch.queue.model import State, TaskRef, TaskRequest
from taskorch.queue.workers import read_workers
from tests.e2e.conftest import Cluster
from tests.e2e.processes import Proc, start_operator, start_worker
from tests.e2e.test_tasks import task_docs
from tests.support import RedisClusterServer, wait_for


def shard_of(cluster: RedisClusterServer, key: str) -> int:
    """The port of the primary that serves `key`'s slot."""
    live = next(n for n in cluster.nodes if n.ping())  # a test may have killed one
    client = redis.RedisCluster(host="127.0.0.1", port=live.port)
    try:
        node = client.get_node_from_key(key)
        return int(node.port)
    finally:
        client.close()


def queues_on_every_shard(cluster: RedisClusterServer, namespace: str) -> list[str]:
    """One queue name per primary: the queues' keys live on three different shards."""
    chosen: dict[int, str] = {}
    i = 0
    while len(chosen) < cluster.masters:
        q = f"q{i}"
        chosen.setdefault(shard_of(cluster, keys.prefix(namespace, q)), q)
        i += 1
    return sorted(chosen.values())


@pytest.fixture
def cluster_procs(
    cluster: Cluster, cluster_url: str, tmp_path: Path
) -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(kind: str, namespace: str = "", **kw: object) -> Proc:
        log = tmp_path / f"{kind}-{len(started)}.log"
        proc = (
            start_operator(cluster_url, cluster.kubeconfig, log)
            if kind == "operator"
            else start_worker(cluster_url, namespace, log, **kw)  # type: ignore[arg-type]
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def test_task_crs_on_queues_spread_over_three_shards_succeed(
    cluster: Cluster,
    namespace: str,
    redis_cluster: RedisClusterServer,
    cluster_procs: Callable[..., Proc],
) -> None:
    queues = queues_on_every_shard(redis_cluster, namespace)
    cluster_procs("operator")
    cluster_procs("worker", namespace, args=("--queues", ",".join(queues)))
    docs = "---\n".join(
        task_docs([f"{q}-{i}" for i in range(3)], {"type": "noop", "queue": q}) for q in queues
    )
    cluster.kubectl("apply", "-f", "-", input=docs, namespace=namespace)
    for q in queues:
        for i in range(3):
            cluster.kubectl(
                "wait",
                "--for=condition=Succeeded",
                f"task/{q}-{i}",
                "--timeout=60s",
                namespace=namespace,
            )
    rows = cluster.kubectl("get", "tasks", namespace=namespace).stdout.splitlines()[1:]
    assert len(rows) == 9 and all("Succeeded" in r for r in rows), rows


def test_a_primary_killed_mid_run_loses_nothing(
    cluster: Cluster,
    namespace: str,
    redis_cluster: RedisClusterServer,
    cluster_url: str,
    cluster_procs: Callable[..., Proc],
) -> None:
    [queue, *_] = queues_on_every_shard(redis_cluster, namespace)
    port = shard_of(redis_cluster, keys.prefix(namespace, queue))
    cluster_procs("worker", namespace, args=("--queues", queue), TASKORCH_LEASE_SECONDS="6")

    async def present() -> bool:
        b = Broker.from_url(redis_cluster.url)
        try:
            return bool(await read_workers(b.redis, namespace))
        finally:
            await b.close()

    # up and connected before the kill: its seed node may be the primary about to die
    wait_for(lambda: asyncio.run(present()), timeout=30, what="the worker's presence")

    async def enqueue() -> list[str]:
        b = Broker.from_url(cluster_url)
        try:
            reqs = [TaskRequest("slow", payload={"seconds": 0.05}) for _ in range(300)]
            return await b.enqueue_many(namespace, queue, reqs)
        finally:
            await b.close()

    ids = asyncio.run(enqueue())
    # Redis replicates asynchronously: wait until the replica has the enqueue (what a caller
    # that cannot lose an acknowledged write does with WAIT), then kill the primary
    subprocess.run(["redis-cli", "-p", str(port), "wait", "1", "5000"], check=True, timeout=10)
    [primary] = [n for n in redis_cluster.nodes if n.port == port]
    assert primary.process is not None
    primary.process.kill()  # SIGKILL
    killed = time.monotonic()
    primary.process.wait(timeout=10)
    wait_for(
        lambda: shard_of(redis_cluster, keys.prefix(namespace, queue)) != port,
        timeout=60,
        interval=0.5,
        what="a replica to be promoted",
    )
    promoted = time.monotonic() - killed

    async def states() -> list[State | None]:
        b = Broker.from_url(redis_cluster.url)  # seeded with a live node: the old one is dead
        try:
            infos = await b.get_many([TaskRef(namespace, queue, i) for i in ids])
            return [i.state if i else None for i in infos]
        finally:
            await b.close()

    def all_done() -> bool:
        try:
            return all(s is State.succeeded for s in asyncio.run(states()))
        except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException):
            return False  # the client's view of the cluster is still moving

    wait_for(all_done, timeout=120, interval=0.5, what="every task to succeed after failover")
    # the figures the docs quote (pytest -s shows them); cluster-node-timeout is 2 s here
    print(
        f"failover: replica promoted {promoted:.1f} s after the kill; all {len(ids)} tasks "
        f"succeeded {time.monotonic() - killed:.1f} s after it"
    )
    primary.start()  # it rejoins as a replica of the promoted one (its nodes.conf says so)
