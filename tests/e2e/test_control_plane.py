"""The control plane the rest of the suite relies on: Deployments get Running pods, /scale works,
pod-deletion-cost steers scale-down, and ServiceAccount tokens are subject to real RBAC."""

from __future__ import annotations

import json

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.e2e.conftest import Cluster
from tests.support import wait_for

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: example.invalid/web:1}]
"""


def running_pods(cluster: Cluster, namespace: str) -> list[dict[str, object]]:
    pods = cluster.get_json("pods", "-l", "app=web", namespace=namespace)["items"]
    return [
        p
        for p in pods
        if p["status"].get("phase") == "Running" and "deletionTimestamp" not in p["metadata"]
    ]


def test_nodes_are_ready(cluster: Cluster) -> None:
    nodes = cluster.get_json("nodes")["items"]
    ready = [
        n
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    ]
    assert len(ready) >= 1, nodes


def test_deployment_scales_down_the_cheapest_pod_first(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=DEPLOYMENT, namespace=namespace)
    pods = wait_for(
        lambda: p if len(p := running_pods(cluster, namespace)) == 3 else None,
        timeout=60,
        what="3 Running pods",
    )
    names = sorted(str(p["metadata"]["name"]) for p in pods)  # type: ignore[index]
    victim, *keep = names
    for name, cost in [(victim, "-100"), *((n, "100") for n in keep)]:
        cluster.kubectl(
            "annotate",
            "pod",
            name,
            f"controller.kubernetes.io/pod-deletion-cost={cost}",
            namespace=namespace,
        )
    patch = json.dumps({"spec": {"replicas": 2}})
    cluster.kubectl(
        "patch",
        "deployment",
        "web",
        "--subresource=scale",
        "--type=merge",
        "-p",
        patch,
        namespace=namespace,
    )
    scale = cluster.get_json("deployment/web", "--subresource=scale", namespace=namespace)
    assert scale["spec"]["replicas"] == 2
    remaining = wait_for(
        lambda: (
            sorted(str(p["metadata"]["name"]) for p in r)  # type: ignore[index]
            if len(r := running_pods(cluster, namespace)) == 2
            else None
        ),
        timeout=60,
        what="scale-down to 2 pods",
    )
    assert remaining == sorted(keep), f"expected {victim} (lowest deletion cost) to go"


RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader-reads-pods}
subjects: [{kind: ServiceAccount, name: reader}]
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
"""


def test_serviceaccount_token_is_bound_by_rbac(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=RBAC, namespace=namespace)
    token = cluster.kubectl("create", "token", "reader", namespace=namespace).stdout.strip()
    admin = cluster.api_client()
    cfg = k8s.Configuration()
    cfg.host = admin.configuration.host
    cfg.ssl_ca_cert = admin.configuration.ssl_ca_cert
    cfg.verify_ssl = admin.configuration.verify_ssl
    cfg.api_key = {"authorization": f"Bearer {token}"}
    core = k8s.CoreV1Api(k8s.ApiClient(cfg))

    assert core.list_namespaced_pod(namespace).items == []  # granted: no error
    with pytest.raises(ApiException) as denied:
        core.list_namespaced_secret(namespace)
    assert denied.value.status == 403
    with pytest.raises(ApiException) as elsewhere:
        core.list_namespaced_pod("default")
    assert elsewhere.value.status == 403
