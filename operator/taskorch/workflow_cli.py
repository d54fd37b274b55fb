"""`taskorch workflow get|retry`: a Workflow's DAG as a tree, and retry from failure. They use
your kubeconfig, as kubectl does: the operator does the work, RBAC decides who may."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import click

from taskorch.api.base import GROUP, VERSION
from taskorch.api.workflow import TERMINAL_WORKFLOW_PHASES


def _api() -> Any:
    from kubernetes import client, config

    config.load_config()
    return client.CustomObjectsApi()


def fetch(namespace: str, name: str) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException

    try:
        body: dict[str, Any] = _api().get_namespaced_custom_object(
            GROUP, VERSION, namespace, "workflows", name
        )
    except ApiException as e:
        raise click.ClickException(f"workflow {namespace}/{name}: {e.reason}") from e
    return body


def render_tree(body: dict[str, Any]) -> str:
    """The DAG from its roots, each step under the steps it depends on (a step with several
    dependencies is drawn in full under the first, and referred to under the others)."""
    status = body.get("status") or {}
    summaries = {s["name"]: s for s in status.get("steps") or []}
    spec = body["spec"]
    lines = [
        f"{body['metadata']['name']}  {status.get('phase', 'Pending')}  "
        f"{status.get('progress', '')}  {status.get('duration', '')}".rstrip()
    ]
    for group, steps in (("", spec.get("steps", [])), ("finally", spec.get("finally") or [])):
        if group and steps:
            lines.append("finally:")
        lines += list(_tree_lines(steps, summaries))
    return "\n".join(lines)


def _tree_lines(steps: list[dict[str, Any]], summaries: dict[str, Any]) -> Iterator[str]:
    children: dict[str | None, list[str]] = {}
    for s in steps:
        deps = s.get("dependsOn") or [None]
        for d in deps:
            children.setdefault(d, []).append(s["name"])
    drawn: set[str] = set()

    def walk(name: str, prefix: str, last: bool) -> Iterator[str]:
        summary = summaries.get(name, {})
        line = f"{prefix}{'└─ ' if last else '├─ '}{name}  {summary.get('phase', 'Pending')}"
        if summary.get("reason") and summary.get("reason") != summary.get("phase"):
            line += f" ({summary['reason']})"
        if summary.get("items") is not None:
            counts = ", ".join(f"{k} {v}" for k, v in (summary.get("counts") or {}).items())
            line += f"  {summary['items']} items: {counts}"
        if summary.get("message"):
            line += f"  {summary['message'][:80]}"
        if name in drawn:
            yield f"{line}  ↑"
            return
        drawn.add(name)
        yield line
        kids = children.get(name, [])
        for i, kid in enumerate(kids):
            yield from walk(kid, prefix + ("   " if last else "│  "), i == len(kids) - 1)

    roots = children.get(None, [])
    for i, root in enumerate(roots):
        yield from walk(root, "", i == len(roots) - 1)


def get(namespace: str, name: str, watch: bool) -> None:
    shown = ""
    while True:
        body = fetch(namespace, name)
        text = render_tree(body)
        if text != shown:
            click.echo(text + ("\n" if watch else ""))
            shown = text
        if not watch or (body.get("status") or {}).get("phase") in TERMINAL_WORKFLOW_PHASES:
            return
        time.sleep(1.0)  # a terminal's refresh rate


def retry(namespace: str, name: str) -> str:
    from taskorch.controller.workflows import RETRY_ANNOTATION

    token = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    patch = {"metadata": {"annotations": {RETRY_ANNOTATION: token}}}
    _api().patch_namespaced_custom_object(GROUP, VERSION, namespace, "workflows", name, patch)
    return token
