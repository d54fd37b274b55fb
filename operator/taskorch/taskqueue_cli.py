"""`taskorch pause|resume` where a TaskQueue declares the queue: its `spec.paused` is the one
source of truth (the operator writes it to Redis), so the CLI patches it, with your kubeconfig and
RBAC, instead of writing Redis behind the operator's back."""

from __future__ import annotations

from typing import Any

import click

from taskorch.api.base import GROUP, VERSION


def patch_paused(namespace: str, queue: str, paused: bool) -> bool:
    """Patch the TaskQueue of `queue`; False when there is none (or no cluster to ask), so the
    caller writes Redis directly."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_config()  # type: ignore[no-untyped-call]
    except ConfigException:
        return False
    api: Any = client.CustomObjectsApi()
    try:
        api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "taskqueues", queue, {"spec": {"paused": paused}}
        )
    except ApiException as e:
        if e.status == 404:  # no TaskQueue (or no CRD): the queue's state lives in Redis only
            return False
        raise click.ClickException(
            f"taskqueue {namespace}/{queue}: {e.reason} (the TaskQueue holds the queue's pause; "
            "patch it with kubectl, or ask for RBAC to patch taskqueues)"
        ) from e
    return True
