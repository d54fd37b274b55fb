"""The server's Kubernetes calls. Under its own ServiceAccount: the two reviews that authenticate
and authorize callers, and reads of taskorch objects (the chart grants exactly these:
tokenreviews and subjectaccessreviews create, get/list/watch on taskorch's kinds). Changes to
Kubernetes objects (a TaskQueue's pause, a Workflow's retry, a Schedule's trigger) are made with
the caller's own token, as Kubernetes Dashboard does, so the API server itself applies their
RBAC and the server needs no write access, nor impersonation. The sync client runs in a small
thread pool so the event loop never blocks."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from taskorch.api.base import GROUP, VERSION
from taskorch.server.auth import Action, Caller, Forbidden, Unauthenticated
from taskorch.server.errors import Conflict, Invalid, KubeUnavailable, Missing


class KubeReviewer:
    def __init__(self, threads: int = 8) -> None:
        k8s_config.load_config()
        cfg = k8s.Configuration.get_default_copy()
        cfg.connection_pool_maxsize = threads
        self.cfg = cfg
        api = k8s.ApiClient(cfg)
        self.authn = k8s.AuthenticationV1Api(api)
        self.authz = k8s.AuthorizationV1Api(api)
        self.custom = k8s.CustomObjectsApi(api)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube")

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, lambda: fn(*args, **kwargs))

    async def review_token(self, token: str) -> Caller | None:
        review = k8s.V1TokenReview(spec=k8s.V1TokenReviewSpec(token=token))
        out = await self._run(self.authn.create_token_review, review)
        status = out.status
        if not status or not status.authenticated or not status.user:
            return None
        return _caller(status.user)

    async def whoami(self) -> Caller:
        out = await self._run(
            self.authn.create_self_subject_review, k8s.V1SelfSubjectReview(metadata={})
        )
        return _caller(out.status.user_info)

    async def review_access(self, caller: Caller, action: Action) -> tuple[bool, str]:
        spec = k8s.V1SubjectAccessReviewSpec(
            user=caller.username,
            uid=caller.uid or None,
            groups=list(caller.groups) or None,
            extra={k: list(v) for k, v in caller.extra} or None,
            resource_attributes=k8s.V1ResourceAttributes(
                group=GROUP,
                version=VERSION,
                resource=action.resource,
                verb=action.verb,
                namespace=action.namespace,
            ),
        )
        out = await self._run(
            self.authz.create_subject_access_review, k8s.V1SubjectAccessReview(spec=spec)
        )
        return bool(out.status.allowed), str(out.status.reason or "")

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """An object read with the server's own account; None when there is none."""
        try:
            obj: dict[str, Any] = await self._run(
                self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, plural, name
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise _server_read_error(e, plural, namespace) from e
        return obj

    async def list(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        try:
            out = await self._run(
                self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, plural
            )
        except ApiException as e:
            raise _server_read_error(e, plural, namespace) from e
        items: list[dict[str, Any]] = out.get("items", [])
        return items

    def _as(self, token: str) -> Any:
        """The custom-objects API authenticated as the caller (their token only: no client
        certificate or token of the server's rides along)."""
        cfg = k8s.Configuration.get_default_copy()
        for attr in ("host", "ssl_ca_cert", "verify_ssl", "proxy", "tls_server_name"):
            setattr(cfg, attr, getattr(self.cfg, attr, None))
        cfg.cert_file = cfg.key_file = None
        cfg.api_key = {"authorization": f"Bearer {token}"}
        cfg.api_key_prefix = {}
        cfg.refresh_api_key_hook = None
        return k8s.CustomObjectsApi(k8s.ApiClient(cfg))

    async def patch_as(
        self, token: str, plural: str, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """A merge patch sent with the caller's token: their RBAC decides."""
        api = self._as(token)
        return await self._as_caller(
            api.patch_namespaced_custom_object, GROUP, VERSION, namespace, plural, name, body
        )

    async def create_as(
        self, token: str, plural: str, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        api = self._as(token)
        return await self._as_caller(
            api.create_namespaced_custom_object, GROUP, VERSION, namespace, plural, body
        )

    async def _as_caller(self, fn: Any, *args: Any) -> dict[str, Any]:
        try:
            out: dict[str, Any] = await self._run(fn, *args)
        except ApiException as e:
            message = _message(e)
            if e.status == 401:
                raise Unauthenticated(message) from e
            if e.status == 403:
                raise Forbidden(message) from e
            if e.status == 404:
                raise Missing(message) from e
            if e.status == 409:
                raise Conflict(message) from e
            if e.status in (400, 422):
                raise Invalid(message) from e
            raise KubeUnavailable(f"the Kubernetes API answered {e.status}: {message}") from e
        return out


def _server_read_error(e: ApiException, plural: str, namespace: str) -> Exception:
    if e.status == 403:
        # e.g. operator.watchNamespaces: the server's read Role exists only there
        return Forbidden(f"the server's own account may not read {plural} in {namespace}")
    return KubeUnavailable(f"the Kubernetes API answered {e.status}: {_message(e)}")


def _message(e: ApiException) -> str:
    try:
        return str(json.loads(e.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return str(e.reason)


def _caller(user: Any) -> Caller:
    extra = tuple(sorted((k, tuple(v or ())) for k, v in (user.extra or {}).items()))
    return Caller(
        username=user.username or "",
        uid=user.uid or "",
        groups=tuple(user.groups or ()),
        extra=extra,
    )
