"""The operator's own Kubernetes calls (status patches, Events, payloadFrom reads), made with the
sync client in a bounded thread pool so kopf's event loop never blocks; status patches, the
calls made per Task, over aiohttp on the event loop itself where the client configuration
allows (StatusPatcher)."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter

from taskorch.api.base import GROUP, VERSION


class KubeAPI(Protocol):
    """The operator's Kubernetes calls, as the status writer, the tracker and the Task handlers
    use them (Kube below; the unit tests' fakes)."""

    async def patch_status(
        self, plural: str, namespace: str, name: str, uid: str, status: dict[str, Any]
    ) -> bool: ...

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def delete(
        self, plural: str, namespace: str, name: str, uid: str | None = None
    ) -> None: ...

    async def event(
        self, kind: str, namespace: str, name: str, uid: str, type_: str, reason: str, message: str
    ) -> None: ...

    async def read_key(self, namespace: str, kind: str, name: str, key: str) -> str: ...

    async def create(self, plural: str, namespace: str, body: dict[str, Any]) -> bool: ...

    async def list_objects(
        self, plural: str, namespace: str, selector: str
    ) -> list[dict[str, Any]]: ...

    async def patch(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> None: ...

    async def read_scale(self, namespace: str, deployment: str) -> tuple[int, str] | None: ...

    async def patch_scale(self, namespace: str, deployment: str, replicas: int) -> None: ...

    async def pods(self, namespace: str, selector: str) -> list[tuple[str, dict[str, str]]]: ...

    async def annotate_pod(self, namespace: str, pod: str, key: str, value: str | None) -> None: ...


STATUS_WRITES = Counter("taskorch_operator_status_writes", "Status patches sent.", ["kind"])
COMPONENT = "taskorch-operator"


class Kube:
    def __init__(self, threads: int = 16) -> None:
        k8s_config.load_config()
        cfg = k8s.Configuration.get_default_copy()
        cfg.connection_pool_maxsize = threads
        api = k8s.ApiClient(cfg)
        self.custom = k8s.CustomObjectsApi(api)
        self.core = k8s.CoreV1Api(api)
        self.apps = k8s.AppsV1Api(api)
        self.batch = k8s.BatchV1Api(api)
        self.coordination = k8s.CoordinationV1Api(api)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube")
        self.patcher = StatusPatcher(cfg, self.pool, threads) if StatusPatcher.usable(cfg) else None

    async def close(self) -> None:
        if self.patcher is not None:
            await self.patcher.close()

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, lambda: fn(*args, **kwargs))

    async def _unless(self, statuses: tuple[int, ...], fn: Any, *args: Any, **kwargs: Any) -> Any:
        """`fn`'s answer, or None when the API server answers one of `statuses` (404: gone,
        409: taken): outcomes the callers expect, not errors."""
        try:
            return await self._run(fn, *args, **kwargs)
        except ApiException as e:
            if e.status in statuses:
                return None
            raise

    async def patch_status(
        self, plural: str, namespace: str, name: str, uid: str, status: dict[str, Any]
    ) -> bool:
        """Replace the status subresource of the object `name` if it is still the one with
        `uid`; False when it is gone or is a new object of the same name (a late change of a
        deleted Task must not land on its successor). A JSON patch whose first operation tests
        the UID is the precondition: a merge patch cannot carry one."""
        body = [
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "add", "path": "/status", "value": status},
        ]
        try:
            if self.patcher is not None:
                await self.patcher.patch(
                    f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}/status", body
                )
            else:
                # The answer (the whole object) is not turned into Python objects: nothing reads it.
                await self._run(
                    _read_raw,
                    self.custom.patch_namespaced_custom_object_status,
                    GROUP,
                    VERSION,
                    namespace,
                    plural,
                    name,
                    body,
                    _content_type="application/json-patch+json",
                    _preload_content=False,
                )
        except ApiException as e:
            if e.status == 404 or (e.status == 422 and _failed_uid_test(e)):
                return False
            raise
        STATUS_WRITES.labels(plural).inc()
        return True

    def list_page_sync(
        self, plural: str, namespace: str | None, token: str | None, limit: int = 500
    ) -> dict[str, Any]:
        """One page of a list (namespace None: cluster-wide), in the calling thread."""
        kwargs: dict[str, Any] = {"limit": limit, "_preload_content": False}
        if token:
            kwargs["_continue"] = token
        call: Any  # an urllib3 response
        if namespace is None:
            call = self.custom.list_cluster_custom_object(GROUP, VERSION, plural, **kwargs)
        else:
            call = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, **kwargs
            )
        page: dict[str, Any] = json.loads(call.data)
        return page

    def watch_sync(
        self, plural: str, namespace: str | None, version: str, seconds: int
    ) -> Iterator[list[bytes]]:
        """A watch from `version` (with bookmarks) for up to `seconds`, in the calling thread:
        the event lines, a list per chunk received."""
        kwargs: dict[str, Any] = {
            "watch": True,
            "resource_version": version,
            "allow_watch_bookmarks": True,
            "timeout_seconds": seconds,
            "_preload_content": False,
            "_request_timeout": (10, seconds + 30),
        }
        response: Any  # an urllib3 response, read as it streams
        if namespace is None:
            response = self.custom.list_cluster_custom_object(GROUP, VERSION, plural, **kwargs)
        else:
            response = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, **kwargs
            )
        try:
            rest = b""
            for chunk in response.stream(amt=None, decode_content=False):
                *lines, rest = (rest + chunk).split(b"\n")
                complete = [line for line in lines if line.strip()]
                if complete:
                    yield complete
        finally:
            response.close()  # when ended early: not handed back to the pool half-read
            response.release_conn()

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        body: dict[str, Any] | None = await self._unless(
            (404,),
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
        )
        return body

    async def delete(self, plural: str, namespace: str, name: str, uid: str | None = None) -> None:
        """Delete, if it still exists (and, with `uid`, only if it is still that object)."""
        body = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=uid)) if uid else None
        await self._unless(
            (404, 409),  # 409: a new object of the same name: not ours
            self.custom.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            body=body,
        )

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Lease as JSON (MicroTimes kept as written), or None when there is none."""
        response = await self._unless(
            (404,),
            self.coordination.read_namespaced_lease,
            name,
            namespace,
            _preload_content=False,
        )
        return None if response is None else dict(json.loads(response.data))

    async def write_lease(self, namespace: str, body: dict[str, Any], create: bool = False) -> bool:
        """Create or replace the Lease (a replace carries the resourceVersion read); False when
        another replica wrote it first (409)."""
        api = self.coordination
        call: tuple[Any, ...] = (
            (api.create_namespaced_lease, namespace, body)
            if create
            else (api.replace_namespaced_lease, body["metadata"]["name"], namespace, body)
        )
        return await self._unless((409,), *call, _preload_content=False) is not None

    async def create(self, plural: str, namespace: str, body: dict[str, Any]) -> bool:
        """Create the object; False when one of that name exists already (a deterministic name
        makes creation idempotent)."""
        created = await self._unless(
            (409,),
            self.custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            body,
        )
        return created is not None

    async def list_objects(
        self, plural: str, namespace: str, selector: str
    ) -> list[dict[str, Any]]:
        body = await self._run(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            label_selector=selector,
        )
        items: list[dict[str, Any]] = body.get("items") or []
        return items

    async def patch(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        """A merge patch of the object (not its status); a vanished object is fine."""
        await self._unless(
            (404,),
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            body,
        )

    async def read_scale(self, namespace: str, deployment: str) -> tuple[int, str] | None:
        """A Deployment's replicas and pod selector (its /scale), or None when it is missing."""
        scale = await self._unless(
            (404,), self.apps.read_namespaced_deployment_scale, deployment, namespace
        )
        if scale is None:
            return None
        return int(scale.spec.replicas or 0), str(scale.status.selector or "")

    async def patch_scale(self, namespace: str, deployment: str, replicas: int) -> None:
        await self._run(
            self.apps.patch_namespaced_deployment_scale,
            deployment,
            namespace,
            {"spec": {"replicas": replicas}},
        )

    async def pods(self, namespace: str, selector: str) -> list[tuple[str, dict[str, str]]]:
        """The live (not terminating) pods of a selector: name and annotations."""
        got = await self._run(self.core.list_namespaced_pod, namespace, label_selector=selector)
        return [
            (p.metadata.name, dict(p.metadata.annotations or {}))
            for p in got.items
            if p.metadata.deletion_timestamp is None
        ]

    # -- Jobs of container tasks (JSON as the API server sends it: nothing is turned into models)

    async def create_job(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create the Job; False when one of its name exists already."""
        created = await self._unless(
            (409,), self.batch.create_namespaced_job, namespace, body, _preload_content=False
        )
        return created is not None

    async def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        response = await self._unless(
            (404,), self.batch.read_namespaced_job, name, namespace, _preload_content=False
        )
        return None if response is None else dict(json.loads(response.data))

    async def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return await self._items(self.batch.list_namespaced_job, namespace, selector)

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return await self._items(self.core.list_namespaced_pod, namespace, selector)

    async def _items(self, list_call: Any, namespace: str, selector: str) -> list[dict[str, Any]]:
        """A namespaced list's items as JSON."""
        response = await self._run(
            list_call, namespace, label_selector=selector, _preload_content=False
        )
        return list(json.loads(response.data).get("items") or [])

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete the Job and, in the background, its pods; a Job already gone is fine."""
        await self._unless(
            (404,),
            self.batch.delete_namespaced_job,
            name,
            namespace,
            propagation_policy="Background",
            _preload_content=False,
        )

    async def annotate_pod(self, namespace: str, pod: str, key: str, value: str | None) -> None:
        """Set (or with None remove) one annotation; a vanished pod is fine."""
        await self._unless(
            (404,),
            self.core.patch_namespaced_pod,
            pod,
            namespace,
            {"metadata": {"annotations": {key: value}}},
        )

    async def event(
        self, kind: str, namespace: str, name: str, uid: str, type_: str, reason: str, message: str
    ) -> None:
        now = datetime.now(UTC)
        body = k8s.CoreV1Event(
            metadata=k8s.V1ObjectMeta(generate_name=f"{name}.", namespace=namespace),
            involved_object=k8s.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}", kind=kind, namespace=namespace, name=name, uid=uid
            ),
            type=type_,
            reason=reason,
            message=message[:1024],
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=k8s.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT,
        )
        await self._run(self.core.create_namespaced_event, namespace, body)

    async def create_secret(
        self, namespace: str, name: str, data: dict[str, str], labels: dict[str, str]
    ) -> bool:
        """Create an Opaque Secret; False when one of that name exists already."""
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": labels},
            "type": "Opaque",
            "stringData": data,
        }
        created = await self._unless((409,), self.core.create_namespaced_secret, namespace, body)
        return created is not None

    async def read_key(self, namespace: str, kind: str, name: str, key: str) -> str:
        """A Secret's or ConfigMap's value; raises KeyError when the object or key is missing and
        PermissionError when RBAC does not let the operator read it."""
        try:
            if kind == "secret":
                obj = await self._run(self.core.read_namespaced_secret, name, namespace)
                data = obj.data or {}
                if key in data:
                    return base64.b64decode(data[key]).decode()
            else:
                obj = await self._run(self.core.read_namespaced_config_map, name, namespace)
                if key in (obj.data or {}):
                    return str(obj.data[key])
        except ApiException as e:
            if e.status == 404:
                raise KeyError(f"{kind} {namespace}/{name} not found") from e
            if e.status == 403:
                raise PermissionError(
                    f"the operator may not read {kind} {namespace}/{name} (RBAC)"
                ) from e
            raise
        raise KeyError(f"{kind} {namespace}/{name} has no key {key!r}")


class StatusPatcher:
    """JSON patches over aiohttp on the event loop. A status patch is the operator's one
    Kubernetes call per Task, and through the sync client it cost a thread hop, the client's
    validation of its arguments and urllib3's request building: over a quarter of the
    operator's CPU per Task in the CR bench (bench/README.md), once Tasks left kopf. Used when
    the client configuration is plain (a CA file or data, a client certificate, a bearer token:
    in-cluster and kubeconfig alike); with a proxy, basic auth, a TLS server name or
    assert_hostname the sync client makes the call instead."""

    TOKEN_SECONDS = 60.0  # the bearer token is re-read (in the thread pool) this often

    def __init__(self, cfg: k8s.Configuration, pool: ThreadPoolExecutor, connections: int) -> None:
        self.cfg = cfg
        self.pool = pool
        self.connections = connections
        self.session: aiohttp.ClientSession | None = None
        self.token: str | None = None
        self.token_read = -float("inf")

    @staticmethod
    def usable(cfg: k8s.Configuration) -> bool:
        return not (
            getattr(cfg, "proxy", None)
            or getattr(cfg, "username", None)
            or getattr(cfg, "password", None)
            or getattr(cfg, "tls_server_name", None)
            or getattr(cfg, "assert_hostname", None) is not None
        )

    def _ssl(self) -> ssl.SSLContext:
        cfg = self.cfg
        if cfg.verify_ssl:
            ctx = ssl.create_default_context(
                cafile=cfg.ssl_ca_cert, cadata=getattr(cfg, "ca_cert_data", None)
            )
        else:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        return ctx

    async def _authorization(self) -> str | None:
        """The Authorization header, re-read now and then in the thread pool: the client's
        refresh hook reads a rotated ServiceAccount token from disk, or runs an exec plugin."""
        if time.monotonic() - self.token_read > self.TOKEN_SECONDS:
            loop = asyncio.get_running_loop()
            self.token = await loop.run_in_executor(
                self.pool, self.cfg.get_api_key_with_prefix, "BearerToken", "authorization"
            )
            self.token_read = time.monotonic()
        return self.token

    async def patch(self, path: str, body: Any) -> None:
        """A JSON patch; raises ApiException as the sync client would (status, reason, body)."""
        if self.session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=self.connections)
            self.session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=60)
            )
        headers = {"Content-Type": "application/json-patch+json", "Accept": "application/json"}
        token = await self._authorization()
        if token:
            headers["Authorization"] = token
        url = self.cfg.host.rstrip("/") + urllib.parse.quote(path)
        async with self.session.patch(url, data=json.dumps(body), headers=headers) as response:
            data = await response.read()
            if response.status >= 300:
                if response.status == 401:
                    self.token_read = -float("inf")  # re-read before the next call
                error = ApiException(status=response.status, reason=response.reason)
                error.body = data.decode("utf-8", "replace")
                raise error

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def _read_raw(fn: Any, *args: Any, **kwargs: Any) -> bytes:
    """Call with _preload_content=False and read the answer's bytes (which frees the
    connection for the next call)."""
    data: bytes = fn(*args, **kwargs).data
    return data


def _failed_uid_test(e: ApiException) -> bool:
    return "/metadata/uid" in str(e.body or "") and "test" in str(e.body or "")
