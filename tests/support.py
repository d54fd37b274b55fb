"""Test helpers shared by unit and e2e tests: waiting on conditions and running real servers."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "tests" / "tools"


def wait_for(
    probe: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or probe!r}; last: {last!r}"
    )


async def async_wait_for(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 30.0,
    interval: float = 0.02,
    what: str = "",
) -> T:
    """The asyncio twin of `wait_for`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or probe!r}; last: {last!r}"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too and within range."""
    rng = random.Random()
    while True:
        port = rng.randint(20000, 55000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port


@dataclass
class RedisServer:
    """A real redis-server on a free loopback port, AOF on, data in its own directory."""

    directory: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    cluster: bool = False  # a Redis Cluster node (RedisClusterServer joins them)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if not self.port:
            self.port = free_cluster_port() if self.cluster else free_port()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                *(
                    ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
                    if self.cluster
                    else []
                ),
            ],
            stdout=(self.directory / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_for(self.ping, timeout=10, what=f"redis-server on port {self.port}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class RedisClusterServer:
    """A real Redis Cluster on loopback: `masters` primaries, each with one replica, made by
    `redis-cli --cluster create` (DESIGN §7: no Docker, Debian's redis-server)."""

    directory: Path
    masters: int = 3
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Seeded with a live node (a test may have killed one)."""
        live = next(n for n in self.nodes if n.ping())
        return f"redis+cluster://127.0.0.1:{live.port}/0"

    def start(self) -> None:
        self.nodes = [
            RedisServer(self.directory / f"node-{i}", cluster=True) for i in range(self.masters * 2)
        ]
        try:
            self._create()
        except BaseException:
            self.stop()  # no orphaned redis-servers when the cluster could not form
            raise

    def _create(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for(self.ready, timeout=30, what="the cluster to be ok with every slot served")

    def ready(self) -> bool:
        for node in self.nodes:
            out = self.cli(node.port, "cluster", "info")
            if "cluster_state:ok" not in out or "cluster_slots_ok:16384" not in out:
                return False
        return True

    def cli(self, port: int, *args: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10
        )
        return done.stdout

    def primaries(self) -> list[RedisServer]:
        return [
            n
            for n in self.nodes
            if n.ping() and "role:master" in self.cli(n.port, "info", "replication")
        ]

    def flush(self) -> None:
        for node in self.primaries():
            self.cli(node.port, "flushall")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def tools_bin() -> Path:
    out = subprocess.run(
        [str(TOOLS / "build-tools.sh")], check=True, capture_output=True, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


def env_with_tools(kubeconfig: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{tools_bin()}{os.pathsep}{env['PATH']}"
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def broker_call(redis_url: str, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run `fn(broker)` with a Broker of its own, from synchronous test code."""
    from taskorch.queue.broker import Broker

    async def go() -> Any:
        b = Broker.from_url(redis_url)
        try:
            return await fn(b)
        finally:
            await b.close()

    return asyncio.run(go())


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    error: str | None  # the status message of a span whose status is ERROR


class OtlpReceiver:
    """An OTLP/HTTP trace receiver in the test process: processes export their spans to it
    (OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url) and tests read them back."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.spans: list[Span] = []
        lock = self.lock = threading.Lock()
        spans = self.spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                got = []
                for rs in request.resource_spans:
                    attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            got.append(
                                Span(
                                    service=attrs.get("service.name", ""),
                                    name=s.name,
                                    trace_id=s.trace_id.hex(),
                                    span_id=s.span_id.hex(),
                                    parent_id=s.parent_span_id.hex(),
                                    attributes={
                                        a.key: a.value.string_value or a.value.int_value
                                        for a in s.attributes
                                    },
                                    error=s.status.message if s.status.code == 2 else None,
                                )
                            )
                with lock:
                    spans.extend(got)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def env(self, service: str) -> dict[str, str]:
        """What a process needs to export here quickly."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.url,
            "OTEL_SERVICE_NAME": service,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }

    def named(self, name: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.name == name]

    def close(self) -> None:
        self.server.shutdown()
