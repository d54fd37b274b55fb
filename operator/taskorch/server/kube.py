"""The server's Kubernetes calls, under its own ServiceAccount: the two reviews that authenticate
and authorize callers, and reads of taskorch objects. The sync client runs in a small thread
pool so the event loop never blocks. The chart grants exactly these: tokenreviews and
subjectaccessreviews create, and get/list/watch on taskorch's kinds."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from taskorch.api.base import GROUP, VERSION
from taskorch.server.auth import Action, Caller


class KubeReviewer:
    def __init__(self, threads: int = 8) -> None:
        k8s_config.load_config()
        cfg = k8s.Configuration.get_default_copy()
        cfg.connection_pool_maxsize = threads
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
        try:
            obj: dict[str, Any] = await self._run(
                self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, plural, name
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj

    async def list(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        out = await self._run(
            self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, plural
        )
        items: list[dict[str, Any]] = out.get("items", [])
        return items


def _caller(user: Any) -> Caller:
    extra = tuple(sorted((k, tuple(v or ())) for k, v in (user.extra or {}).items()))
    return Caller(
        username=user.username or "",
        uid=user.uid or "",
        groups=tuple(user.groups or ()),
        extra=extra,
    )
