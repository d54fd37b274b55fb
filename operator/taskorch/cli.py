"""The `taskorch` command: worker, operator, CRD generation and queue inspection."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from taskorch import __version__
from taskorch.settings import Settings

if TYPE_CHECKING:
    from taskorch.queue.broker import Broker
    from taskorch.queue.inspect import Inspector
    from taskorch.queue.model import TaskInfo

T = TypeVar("T")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="taskorch")
def main() -> None:
    """taskorch: background tasks and DAG workflows as Kubernetes custom resources."""


@main.command()
@click.option(
    "--out",
    "outs",
    multiple=True,
    type=click.Path(file_okay=False),
    default=["crds"],
    show_default=True,
    help="Directory to write taskorch.crds.yaml into (repeatable).",
)
def crds(outs: tuple[str, ...]) -> None:
    """Write the CRDs generated from the API models."""
    from pathlib import Path

    from taskorch.api.crd import render

    text = render()
    for out in outs:
        path = Path(out) / "taskorch.crds.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        click.echo(f"wrote {path}")


def _logging(service: str | None = None) -> None:
    """Logs as the settings say; and traces, for a process that exports them (`service`)."""
    from taskorch import logs, tracing

    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    if service:
        tracing.setup(service)


def _settings(**overrides: object) -> Settings:
    return Settings.model_validate({k: v for k, v in overrides.items() if v is not None})


redis_option = click.option("--redis-url", envvar="TASKORCH_REDIS_URL", help="Redis URL.")
namespace_option = click.option(
    "--namespace", "-n", envvar="TASKORCH_NAMESPACE", default="default", show_default=True
)


@main.command()
@click.option("--app", "app_ref", required=True, help="module:attribute of the taskorch.App.")
@click.option(
    "--queues",
    default="default",
    show_default=True,
    help="Comma-separated: `a,b` serves b only with capacity a leaves (strict order); "
    "`a:3,b:1` shares capacity 3:1, so b progresses while a is full.",
)
@click.option("--concurrency", "-c", default=16, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--grace", default=30.0, show_default=True, help="Seconds to drain on SIGTERM.")
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics here.")
@click.option(
    "--allow-commands",
    envvar="TASKORCH_ALLOW_COMMANDS",
    default=None,
    metavar="EXECUTABLES",
    help="Also run command tasks (spec.command) whose executable is in this comma-separated "
    "list (a name as found on PATH, or an exact path; * for any). Off: such tasks are handed "
    "back for a worker that allows them.",
)
@redis_option
@namespace_option
def worker(
    app_ref: str,
    queues: str,
    concurrency: int,
    grace: float,
    metrics_port: int | None,
    allow_commands: str | None,
    redis_url: str | None,
    namespace: str,
) -> None:
    """Run a worker: claim tasks of NAMESPACE's QUEUES and run them with the app's handlers."""
    import asyncio
    import importlib
    import os
    import signal

    from taskorch.errors import TaskorchError
    from taskorch.queue.broker import Broker
    from taskorch.queue.connection import warn_unless_noeviction
    from taskorch.worker.app import App
    from taskorch.worker.queues import QueueSet
    from taskorch.worker.runner import Worker

    _logging("taskorch-worker")
    try:
        queue_set = QueueSet.parse(queues)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--queues") from e
    module_name, _, attr = app_ref.partition(":")
    app = getattr(importlib.import_module(module_name), attr or "app")
    if not isinstance(app, App):
        raise click.BadParameter(f"{app_ref} is not a taskorch.App", param_hint="--app")
    if allow_commands is not None:
        from taskorch.worker.commands import command_app, parse_allow_list

        try:
            allow = parse_allow_list(allow_commands)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--allow-commands") from e
        served = App()  # the user's app is left as it is
        served.include(app)
        served.include(command_app(allow))
        app = served
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    settings = _settings(redis_url=redis_url, namespace=namespace)
    hung_threads = 0

    async def run() -> None:
        nonlocal hung_threads
        broker = Broker.from_url(settings.redis_url, settings)
        await warn_unless_noeviction(broker.redis)
        w = Worker(
            app,
            broker,
            namespace=settings.namespace,
            queues=queue_set,
            concurrency=concurrency,
            grace_seconds=grace,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, w.drain)
        try:
            await w.run()
        finally:
            hung_threads = w.threads.busy
            await broker.close()

    failure = None
    try:
        with asyncio.Runner(loop_factory=_fast_loop_factory()) as runner:
            runner.run(run())
    except TaskorchError as e:
        # A supervised loop ended (e.g. leases could not be renewed): exit non-zero so that
        # Kubernetes restarts the worker.
        failure = f"taskorch worker stopped: {e}"
    finally:
        from taskorch import tracing

        tracing.shutdown()  # the last spans
    if hung_threads:
        # Python joins every pool thread at exit: a sync handler that ignored its timeout, or
        # whose lease was lost, would keep the worker alive until it returns. Its attempt is
        # over (timed out, released, or owned by another worker now).
        logging.getLogger("taskorch.worker").warning(
            "exiting without waiting for %d hung handler thread(s)", hung_threads
        )
        if failure:
            click.echo(failure, err=True)
        logging.shutdown()
        os._exit(1 if failure else 0)
    if failure:
        raise SystemExit(failure)


@main.command()
@click.option("--namespace", "namespaces", multiple=True, help="Watch only these (repeatable).")
@click.option("--liveness", default="http://0.0.0.0:8080/healthz", show_default=True)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Serve Prometheus metrics (/metrics) and WorkerPool numbers for KEDA "
    "(/scaler/NAMESPACE/NAME) here.",
)
@redis_option
def operator(
    namespaces: tuple[str, ...], liveness: str, metrics_port: int | None, redis_url: str | None
) -> None:
    """Run the operator (kopf): reconcile taskorch resources and write their status."""
    from taskorch.controller.main import run_operator
    from taskorch.errors import TaskorchError

    _logging("taskorch-operator")
    try:
        run_operator(_settings(redis_url=redis_url), list(namespaces), liveness, metrics_port)
    except TaskorchError as e:
        raise SystemExit(f"taskorch operator stopped: {e}") from e


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--read-only",
    is_flag=True,
    envvar="TASKORCH_SERVER_READ_ONLY",
    help="Refuse every change (submit, cancel, requeue, pause), whatever RBAC allows.",
)
@click.option(
    "--anonymous-read",
    is_flag=True,
    envvar="TASKORCH_SERVER_ANONYMOUS_READ",
    help="Let requests without a token read, as the server's own ServiceAccount (off: 401).",
)
@redis_option
def server(
    host: str, port: int, read_only: bool, anonymous_read: bool, redis_url: str | None
) -> None:
    """Serve the HTTP API (/api/v1, OpenAPI at /docs): callers send their Kubernetes token."""
    try:
        import uvicorn

        from taskorch.server.app import create_app
    except ImportError as e:
        raise SystemExit(
            f"taskorch server needs its extra: pip install 'taskorch[server]' ({e})"
        ) from e
    from taskorch.server.auth import Gate
    from taskorch.server.kube import KubeReviewer

    _logging("taskorch-server")
    settings = _settings(redis_url=redis_url)
    kube = KubeReviewer()
    gate = Gate(kube, read_only=read_only, anonymous_read=anonymous_read)
    click.echo(f"taskorch server: http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/")
    uvicorn.run(
        create_app(settings, gate, kube), host=host, port=port, log_level="warning", lifespan="on"
    )


def _fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (a dependency on Linux and macOS): ~10 % less
    of the worker's own CPU per task in the drain benchmark; else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _inspect_call(redis_url: str | None, fn: Callable[[Inspector], Awaitable[T]]) -> T:
    from taskorch.queue.inspect import Inspector

    return _broker_call(redis_url, lambda b: fn(Inspector(b)))


def _broker_call(redis_url: str | None, fn: Callable[[Broker], Awaitable[T]]) -> T:
    import asyncio

    from taskorch.queue.broker import Broker

    async def go() -> T:
        settings = _settings(redis_url=redis_url)
        broker = Broker.from_url(settings.redis_url, settings)
        try:
            return await fn(broker)
        finally:
            await broker.close()

    return asyncio.run(go())


@main.command()
@redis_option
@namespace_option
@click.option("--queue", "-q", default="default", show_default=True)
@click.option("--payload", default=None, help="The payload as JSON (each task gets the same).")
@click.option("--count", type=click.IntRange(1, 1_000_000), default=1, show_default=True)
@click.argument("type_", metavar="TYPE")
def enqueue(
    redis_url: str | None, namespace: str, queue: str, payload: str | None, count: int, type_: str
) -> None:
    """Enqueue COUNT tasks of TYPE straight into Redis (the SDK path, no Task objects)."""
    from taskorch.client import Client

    try:
        body = json.loads(payload) if payload else None
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint="--payload") from e

    async def go() -> list[str]:
        settings = _settings(redis_url=redis_url)
        async with Client(settings.redis_url, namespace=namespace, queue=queue) as c:
            return await c.enqueue_many(type_, [body] * count)

    import asyncio

    ids = asyncio.run(go())
    click.echo(ids[0] if count == 1 else f"{count} tasks enqueued to {namespace}/{queue}")


@main.command()
@redis_option
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table")
def queues(redis_url: str | None, output: str) -> None:
    """List queues: depth, in-flight, delayed, dead, oldest ready age, paused."""

    async def collect(i: Inspector) -> list[dict[str, object]]:
        return [q.as_dict() for q in await i.all_stats()]

    rows = _inspect_call(redis_url, collect)
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    fmt = "{:<20} {:<16} {:>7} {:>7} {:>7} {:>6} {:>10} {:<6}"
    click.echo(
        fmt.format("NAMESPACE", "QUEUE", "READY", "ACTIVE", "DELAYED", "DEAD", "OLDEST", "PAUSED")
    )
    for r in rows:
        age = r["oldest_ready_age_s"]
        click.echo(
            fmt.format(
                str(r["namespace"]),
                str(r["queue"]),
                str(r["ready"]),
                str(r["active"]),
                str(r["delayed"]),
                str(r["dead"]),
                f"{age:.1f}s" if isinstance(age, float) else "-",
                "yes" if r["paused"] else "no",
            )
        )


@main.command()
@redis_option
@namespace_option
@click.option("--queue", "-q", default="default", show_default=True)
@click.argument("task")
def result(redis_url: str | None, namespace: str, queue: str, task: str) -> None:
    """Print a task's result as JSON. TASK is its id, or the `status.resultRef` of a Task
    (redis:NAMESPACE/QUEUE/ID), which points at a result too large for the status."""
    if task.startswith("redis:"):
        namespace, queue, task = task.removeprefix("redis:").split("/", 2)
    info = _broker_call(redis_url, lambda b: b.get(namespace, queue, task))
    if info is None:
        raise click.ClickException(f"no task {task} in {namespace}/{queue} (or it expired)")
    if info.state.value != "succeeded":
        err = info.error or {}
        raise click.ClickException(
            f"task {task} is {info.state.value}: {err.get('reason', '')} {err.get('message', '')}"
        )
    click.echo(json.dumps(info.result, indent=2))


@main.group()
def dlq() -> None:
    """Inspect and requeue dead-lettered tasks."""


queue_option = click.option("--queue", "-q", default="default", show_default=True)


@dlq.command("list")
@redis_option
@namespace_option
@queue_option
@click.option("--limit", default=100, show_default=True)
def dlq_list(redis_url: str | None, namespace: str, queue: str, limit: int) -> None:
    """List dead tasks, oldest first: id, type, attempts, reason."""

    async def collect(i: Inspector) -> list[TaskInfo]:
        return await i.dead_tasks(namespace, queue, limit=limit)

    for info in _inspect_call(redis_url, collect):
        err = info.error or {}
        message = str(err.get("message", ""))[:80]
        click.echo(f"{info.id}\t{info.type}\t{info.attempt}\t{err.get('reason')}: {message}")


@dlq.command("requeue")
@redis_option
@namespace_option
@queue_option
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Requeue every dead task of the queue.")
def dlq_requeue(
    redis_url: str | None, namespace: str, queue: str, ids: tuple[str, ...], all_: bool
) -> None:
    """Put dead tasks back on their queue with a fresh retry budget."""
    if not ids and not all_:
        raise click.UsageError("give task ids or --all")

    async def requeue(b: Broker) -> list[str]:
        from taskorch.queue.inspect import Inspector

        targets = list(ids) or await Inspector(b).dead_ids(namespace, queue, limit=1_000_000)
        return await b.requeue_dead(namespace, queue, targets)

    revived = _broker_call(redis_url, requeue)
    click.echo(f"requeued {len(revived)}: {' '.join(revived)}")
    missing = set(ids) - set(revived)
    if missing:
        raise click.ClickException(f"not in the dead-letter queue: {' '.join(sorted(missing))}")


@dlq.command("purge")
@redis_option
@namespace_option
@queue_option
@click.confirmation_option(prompt="Delete every dead task of this queue?")
def dlq_purge(redis_url: str | None, namespace: str, queue: str) -> None:
    """Delete every dead task of the queue."""
    n = _broker_call(redis_url, lambda b: b.purge_dead(namespace, queue))
    click.echo(f"purged {n}")


@main.command()
@redis_option
@namespace_option
@click.argument("queue")
def pause(redis_url: str | None, namespace: str, queue: str) -> None:
    """Stop workers claiming from QUEUE (running tasks finish). Where a TaskQueue declares the
    queue, patches its spec.paused (your kubeconfig); otherwise writes Redis."""
    _set_paused(redis_url, namespace, queue, True)


@main.command()
@redis_option
@namespace_option
@click.argument("queue")
def resume(redis_url: str | None, namespace: str, queue: str) -> None:
    """Let workers claim from QUEUE again (through its TaskQueue, as for pause)."""
    _set_paused(redis_url, namespace, queue, False)


def _set_paused(redis_url: str | None, namespace: str, queue: str, paused: bool) -> None:
    from taskorch.taskqueue_cli import patch_paused

    done = "paused" if paused else "resumed"
    if patch_paused(namespace, queue, paused):
        flag = str(paused).lower()
        click.echo(
            f"{done} {namespace}/{queue}: TaskQueue spec.paused={flag} (the operator applies it)"
        )
        return
    _broker_call(
        redis_url, lambda b: b.pause(namespace, queue) if paused else b.resume(namespace, queue)
    )
    click.echo(f"{done} {namespace}/{queue} (no TaskQueue declares it: written to Redis)")


@main.group()
def workflow() -> None:
    """Look at and retry Workflows (uses your kubeconfig, like kubectl)."""


@workflow.command("get")
@click.option("--namespace", "-n", default="default", show_default=True)
@click.option("--watch", "-w", is_flag=True, help="Redraw on every change until it ends.")
@click.argument("name")
def workflow_get(namespace: str, name: str, watch: bool) -> None:
    """Show workflow NAME's steps as a tree, with their phases."""
    from taskorch import workflow_cli

    workflow_cli.get(namespace, name, watch)


@workflow.command("retry")
@click.option("--namespace", "-n", default="default", show_default=True)
@click.argument("name")
def workflow_retry(namespace: str, name: str) -> None:
    """Retry workflow NAME from the point of failure: failed steps (and what they skipped, and
    finally) run again; succeeded steps keep their results. Sets the taskorch.io/retry
    annotation, which GitOps users can set themselves."""
    from taskorch import workflow_cli

    workflow_cli.retry(namespace, name)
    click.echo(f"workflow {namespace}/{name}: retry requested")


@main.group()
def schedule() -> None:
    """Work with Schedules (uses your kubeconfig, like kubectl)."""


@schedule.command("trigger")
@click.option("--namespace", "-n", default="default", show_default=True)
@click.argument("name")
def schedule_trigger(namespace: str, name: str) -> None:
    """Run schedule NAME once now: a child from its template, named NAME-manual-<random>, as
    `kubectl create job --from=cronjob/NAME` does. The ticks stay as they are; the child counts
    as running for Forbid/Replace and towards the history limits."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    from taskorch.api.base import GROUP, VERSION
    from taskorch.api.schedule import child_body, child_kind

    config.load_config()  # type: ignore[no-untyped-call]
    api: Any = client.CustomObjectsApi()
    try:
        body = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "schedules", name)
        kind, plural = child_kind(body["spec"])
        created = api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, child_body(body, None, None)
        )
    except ApiException as e:
        raise click.ClickException(f"schedule {namespace}/{name}: {e.reason}: {e.body}") from e
    click.echo(f"{kind.lower()}/{created['metadata']['name']} created")


if __name__ == "__main__":
    main()
