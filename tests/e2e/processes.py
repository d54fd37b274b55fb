"""The operator and workers as local processes, with the same entrypoints the images use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import REPO, free_port, wait_for

PYTHONPATH = os.pathsep.join([str(REPO), str(REPO / "worker-image" / "examples")])


@dataclass
class Proc:
    args: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Proc:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "taskorch.cli", *self.args],
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        return self

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup, as when a node dies."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 30) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def base_env(
    redis_url: str, kubeconfig: Path | None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"TASKORCH_REDIS_URL": redis_url, "PYTHONPATH": PYTHONPATH})
    if kubeconfig:
        env["KUBECONFIG"] = str(kubeconfig)
    env.update(extra or {})
    return env


def start_operator(redis_url: str, kubeconfig: Path, log: Path, *args: str, **extra: str) -> Proc:
    port = free_port()
    proc = Proc(
        ["operator", "--liveness", f"http://127.0.0.1:{port}/healthz", *args],
        base_env(redis_url, kubeconfig, extra),
        log,
    ).start()
    wait_for(lambda: _healthy(port) or _dead(proc), timeout=60, what="operator liveness")
    assert proc.process and proc.process.poll() is None, proc.logs()
    return proc


def start_worker(
    redis_url: str,
    namespace: str,
    log: Path,
    *,
    concurrency: int = 4,
    app: str = "tests.e2e.handlers:app",
    args: tuple[str, ...] = (),
    **extra: str,
) -> Proc:
    return Proc(
        ["worker", "--app", app, "-n", namespace, "-c", str(concurrency), *args],
        base_env(redis_url, None, extra),
        log,
    ).start()


def _healthy(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _dead(proc: Proc) -> bool:
    return bool(proc.process and proc.process.poll() is not None)
