"""The Helm chart against the real API server: it lints, renders, installs, runs a Task with the
operator authenticated as the chart's ServiceAccount (RBAC sufficient), is refused what it was
not granted (RBAC least), keeps a scaled worker count across upgrades, and uninstalls clean."""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import redis
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from prometheus_client import REGISTRY

from tests.e2e.conftest import Cluster
from tests.e2e.processes import Proc, start_operator
from tests.support import REPO, wait_for

CHART = str(REPO / "charts" / "taskorch")
ALL_ON = str(REPO / "tests" / "e2e" / "values-all-on.yaml")


def render(cluster: Cluster, *args: str) -> list[dict[str, Any]]:
    out = cluster.helm("template", "taskorch", CHART, "--namespace", "tasks", *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def deployment(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    [d] = [
        d
        for d in by_kind(docs, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return d


def exported_metrics() -> set[str]:
    """Every sample name the operator and the workers export."""
    import taskorch.controller.kube
    import taskorch.controller.queue_metrics
    import taskorch.controller.workerpools
    import taskorch.worker.metrics  # noqa: F401

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in suffixes.get(family.type, [""])
    }


def assert_queries_parse_and_name_real_metrics(queries: list[str]) -> None:
    exported = exported_metrics()
    for query in queries:
        promql_parser.parse(query)  # raises on a syntax error
        for name in re.findall(r"\btaskorch_[a-z_]+\b", query):
            assert name in exported, f"{name} in {query!r} is not a metric taskorch exports"


def test_chart_lints_and_renders_least_privilege_defaults(cluster: Cluster) -> None:
    cluster.helm("lint", "--strict", CHART)
    cluster.helm("lint", "--strict", CHART, "-f", ALL_ON)
    docs = render(cluster)

    op = deployment(docs, "operator")
    # Leader election is on by default: a rolling update starts the new pod as a standby.
    assert op["spec"]["replicas"] == 1
    assert op["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    pod = op["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    container = pod["containers"][0]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e for e in container["env"]}
    assert env["TASKORCH_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "taskorch-redis"

    worker = deployment(docs, "worker")
    assert "replicas" not in worker["spec"], "the autoscaler owns the worker's replicas"
    worker_env = {e["name"] for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "TASKORCH_ALLOW_COMMANDS" not in worker_env, "command tasks are off by default"
    assert worker["spec"]["template"]["spec"]["automountServiceAccountToken"] is False

    assert env["TASKORCH_LEADER_ELECTION_LEASE"]["value"] == "taskorch-operator"
    [lease_role] = by_kind(docs, "Role")
    assert lease_role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["taskorch-operator"],
            "verbs": ["get", "update"],
        },
    ]
    [role] = by_kind(docs, "ClusterRole")
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert "secrets" not in resources, "reading Secrets is opt-in (rbac.readSecrets)"
    assert "jobs" not in resources, "container tasks are opt-in (operator.containerTasks)"
    assert "TASKORCH_CONTAINER_TASKS" not in env
    assert all("*" not in rule["verbs"] for rule in role["rules"])
    assert not any(
        "delete" in rule["verbs"] for rule in role["rules"] if rule["apiGroups"] != ["taskorch.io"]
    )
    [sts] = by_kind(docs, "StatefulSet")
    redis_args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--appendonly" in redis_args and "--requirepass" in redis_args
    assert by_kind(docs, "ServiceMonitor") == by_kind(docs, "PrometheusRule") == []


def test_chart_renders_every_optional_feature(cluster: Cluster) -> None:
    docs = render(cluster, "-f", ALL_ON)
    kinds = {d["kind"] for d in docs}
    assert {"ServiceMonitor", "PrometheusRule", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    assert by_kind(docs, "StatefulSet") == []
    # Namespaced install: the only cluster-wide grant is the server's two reviews, which are
    # cluster-scoped resources; it reads taskorch objects through Roles, and writes nothing.
    [reviews] = by_kind(docs, "ClusterRole")
    assert reviews["rules"] == [
        {
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["tokenreviews"],
            "verbs": ["create"],
        },
        {
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["subjectaccessreviews"],
            "verbs": ["create"],
        },
    ]
    server_roles = [
        r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-server-read")
    ]
    assert sorted(r["metadata"]["namespace"] for r in server_roles) == ["team-a", "team-b"]
    assert {v for r in server_roles for rule in r["rules"] for v in rule["verbs"]} == {
        "get",
        "list",
        "watch",
    }
    server_args = deployment(docs, "server")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert server_args == ["server", "--port=8080", "--read-only", "--anonymous-read"]
    [ingress] = by_kind(docs, "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "taskorch.example.internal"
    roles = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-operator")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    op = deployment(docs, "operator")
    assert op["spec"]["replicas"] == 2
    pdbs = {p["metadata"]["name"]: p["spec"] for p in by_kind(docs, "PodDisruptionBudget")}
    assert pdbs["taskorch-operator"]["minAvailable"] == 1
    assert any("secrets" in rule["resources"] for rule in roles[0]["rules"])
    assert {
        "apiGroups": ["batch"],
        "resources": ["jobs"],
        "verbs": ["get", "list", "create", "delete"],
    } in roles[0]["rules"]
    op_env = {
        e["name"]: e.get("value") for e in op["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert op_env["TASKORCH_CONTAINER_TASKS"] == "true"
    args = deployment(docs, "operator")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    [dashboard] = [d for d in by_kind(docs, "ConfigMap") if "dashboard" in d["metadata"]["name"]]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    panels = {p["title"] for p in json.loads(dashboard["data"]["taskorch.json"])["panels"]}
    assert {
        "Queue depth (ready)",
        "Dead-letter queue size",
        "Worker replicas",
        "WorkerPools: replicas and demand",
    } <= panels
    [rule] = by_kind(docs, "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts == {
        "TaskorchOperatorDown",
        "TaskorchDeadLetterGrowth",
        "TaskorchBacklogAge",
        "TaskorchFailureRate",
        "TaskorchWorkerPoolAtMax",
    }
    queries = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    queries += [
        t["expr"].replace("$__rate_interval", "5m")
        for p in json.loads(dashboard["data"]["taskorch.json"])["panels"]
        for t in p["targets"]
    ]
    assert_queries_parse_and_name_real_metrics(queries)
    env = deployment(docs, "worker")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "TASKORCH_REDIS_TLS_CA_FILE", "value": "/etc/taskorch/redis-ca/ca.crt"} in env
    assert {"name": "TASKORCH_ALLOW_COMMANDS", "value": "echo,/usr/bin/ffmpeg"} in env
    # redis.acl: workers get the namespace's own Redis user, never the main password.
    by_name = {e["name"]: e for e in env}
    for var, key in (
        ("TASKORCH_REDIS_USERNAME", "username"),
        ("TASKORCH_REDIS_PASSWORD", "password"),
    ):
        ref = by_name[var]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "taskorch-redis-user", "key": key}
    assert {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["taskorch-redis-user"],
        "verbs": ["get"],
    } in roles[0]["rules"]
    bundled = render(cluster, "--set", "networkPolicy.enabled=true")
    assert len(by_kind(bundled, "NetworkPolicy")) == 2  # Redis is fenced off too
    with_server = render(
        cluster, "--set", "networkPolicy.enabled=true", "--set", "server.enabled=true"
    )
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(with_server, "NetworkPolicy")}
    assert policies["taskorch-server"]["ingress"] == [{"ports": [{"port": 8080}]}]
    redis_from = policies["taskorch-redis"]["ingress"][0]["from"][0]["podSelector"]
    assert "server" in redis_from["matchExpressions"][1]["values"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "operator.replicas=two"], "at '/operator/replicas': got string, want integer"),
        (["--set", "redis.mode=sentinel"], "at '/redis/mode': value must be one of 'bundled'"),
        (["--set", "worker.concurency=4"], "additional properties 'concurency' not allowed"),
        (["--set", "redis.mode=external"], "at '/redis/external/url'"),
    ],
)
def test_invalid_values_fail_with_the_schema_message(
    cluster: Cluster, values: list[str], message: str
) -> None:
    proc = cluster.helm("template", "taskorch", CHART, *values, check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr, proc.stderr


def _instance_objects(cluster: Cluster, namespace: str, release: str) -> list[str]:
    selector = f"app.kubernetes.io/instance={release}"
    kinds = (
        "deployments,statefulsets,replicasets,pods,services,secrets,configmaps,serviceaccounts,"
        "roles,rolebindings,persistentvolumeclaims,poddisruptionbudgets,networkpolicies"
    )
    names = cluster.kubectl(
        "get", kinds, "-l", selector, "-o", "name", namespace=namespace
    ).stdout.split()
    names += cluster.kubectl(
        "get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name"
    ).stdout.split()
    return names


@contextlib.contextmanager
def example_task_succeeds_as_operator_sa(
    cluster: Cluster,
    namespace: str,
    release: str,
    redis_url: str,
    sa_kubeconfig: Path,
    workers: Callable[..., Proc],
    *operator_args: str,
    acl: bool = False,
) -> Iterator[None]:
    """Run the operator as a local process authenticated with the chart's ServiceAccount token
    (so real RBAC decides what it may do) and a worker; the example Task must succeed."""
    cluster.serviceaccount_kubeconfig(namespace, f"{release}-operator", sa_kubeconfig)
    log = sa_kubeconfig.with_suffix(".log")
    # Leader election on, as the chart's Deployment runs it: the Lease Role is tested too.
    operator = start_operator(
        redis_url,
        sa_kubeconfig,
        log,
        *operator_args,
        TASKORCH_LEADER_ELECTION="true",
        TASKORCH_LEADER_ELECTION_NAMESPACE=namespace,
        TASKORCH_LEADER_ELECTION_LEASE=f"{release}-operator",
        **({"TASKORCH_REDIS_ACL": "true"} if acl else {}),
    )
    try:
        # Under redis.acl the worker authenticates as the namespace's own Redis user, from the
        # Secret the operator made (as the chart's worker Deployment does).
        workers(**(redis_user_env(cluster, namespace) if acl else {}))
        cluster.kubectl("apply", "-f", str(REPO / "examples" / "task.yaml"), namespace=namespace)
        cluster.kubectl(
            "wait",
            "--for=condition=Succeeded",
            "task/resize-1",
            "--timeout=60s",
            namespace=namespace,
        )
        yield
    finally:
        operator.stop()  # a clean stop releases the Lease


def redis_user_env(cluster: Cluster, namespace: str) -> dict[str, str]:
    def secret() -> dict[str, str] | None:
        found = cluster.kubectl(
            "get", "secret", "taskorch-redis-user", "-o", "json", check=False, namespace=namespace
        )
        if found.returncode != 0:
            return None
        data = json.loads(found.stdout)["data"]
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    creds = wait_for(secret, timeout=60, what="the namespace's Redis user Secret")
    return {
        "TASKORCH_REDIS_USERNAME": creds["username"],
        "TASKORCH_REDIS_PASSWORD": creds["password"],
    }


@pytest.fixture
def release(cluster: Cluster, namespace: str) -> Iterator[str]:
    name = f"taskorch-{namespace[-6:]}"  # cluster-scoped RBAC names must not collide
    yield name
    cluster.helm("uninstall", name, "--namespace", namespace, check=False)


def test_install_run_least_privilege_upgrade_uninstall(
    cluster: Cluster,
    namespace: str,
    release: str,
    redis_url: str,
    tmp_path: Path,
    workers: Callable[..., Proc],
) -> None:
    # No cooldown or stabilization window: the example Schedule's hourly run (applied below)
    # must not hold the idle pool up when the test crosses the top of an hour.
    quick_pool = (
        "--set",
        "worker.autoscaling.cooldownSeconds=0",
        "--set",
        "worker.autoscaling.scaleDown.stabilizationWindowSeconds=0",
        "--set",
        "worker.autoscaling.pollInterval=1s",
    )
    cluster.helm("install", release, CHART, "--namespace", namespace, *quick_pool)
    installed = _instance_objects(cluster, namespace, release)
    for expected in (
        f"deployment.apps/{release}-operator",
        f"deployment.apps/{release}-worker-default",
        f"statefulset.apps/{release}-redis",
        f"secret/{release}-redis",
        f"serviceaccount/{release}-operator",
        f"clusterrole.rbac.authorization.k8s.io/{release}-operator",
    ):
        assert expected in installed, installed
    pvc = f"persistentvolumeclaim/data-{release}-redis-0"
    wait_for(
        lambda: pvc in _instance_objects(cluster, namespace, release),
        timeout=60,
        what="the bundled Redis's volume claim (uninstall must remove it too)",
    )

    sa_kubeconfig = tmp_path / "operator-sa.kubeconfig"
    with example_task_succeeds_as_operator_sa(
        cluster, namespace, release, redis_url, sa_kubeconfig, workers
    ):
        # Least: Secrets were not granted, so payloadFrom a Secret waits with a clear reason.
        cluster.kubectl(
            "create", "secret", "generic", "api", "--from-literal=token=s3cret", namespace=namespace
        )
        secret_task = {
            "apiVersion": "taskorch.io/v1alpha1",
            "kind": "Task",
            "metadata": {"name": "needs-secret"},
            "spec": {
                "type": "noop",
                "payloadFrom": [
                    {"field": "token", "secretKeyRef": {"name": "api", "key": "token"}}
                ],
            },
        }
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(secret_task), namespace=namespace)

        def forbidden_condition() -> dict[str, Any] | None:
            status = cluster.get_json("task/needs-secret", namespace=namespace).get("status", {})
            conds = [c for c in status.get("conditions", []) if c["type"] == "Succeeded"]
            return conds[0] if conds and conds[0]["reason"] == "PayloadFromForbidden" else None

        cond = wait_for(forbidden_condition, timeout=60, what="PayloadFromForbidden")
        assert cond["status"] == "Unknown" and "secret" in cond["message"]

        # ConfigMaps are granted (rbac.readConfigMaps): the value reaches the handler.
        cluster.kubectl(
            "create", "configmap", "cfg", "--from-literal=token=abcdef", namespace=namespace
        )
        ref = {"field": "token", "configMapKeyRef": {"name": "cfg", "key": "token"}}
        cm_task = {
            "apiVersion": "taskorch.io/v1alpha1",
            "kind": "Task",
            "metadata": {"name": "from-configmap"},
            "spec": {"type": "token_length", "payloadFrom": [ref]},
        }
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(cm_task), namespace=namespace)
        cluster.kubectl(
            "wait",
            "--for=condition=Succeeded",
            "task/from-configmap",
            "--timeout=60s",
            namespace=namespace,
        )
        done = cluster.get_json("task/from-configmap", namespace=namespace)
        assert done["status"]["result"] == {"length": 6}
        assert "abcdef" not in json.dumps(done)

        # TaskQueues and Schedules work under the chart's RBAC too: the example queue's policy
        # is applied and its Task runs; a Schedule creates its children and writes its status.
        workers(args=("--queues", "emails"))
        cluster.kubectl(
            "apply", "-f", str(REPO / "examples" / "taskqueue.yaml"), namespace=namespace
        )
        cluster.kubectl(
            "apply", "-f", str(REPO / "examples" / "schedule.yaml"), namespace=namespace
        )
        cluster.kubectl(
            "wait",
            "--for=condition=Succeeded",
            "task/welcome-email",
            "--timeout=60s",
            namespace=namespace,
        )
        cluster.kubectl(
            "wait",
            "--for=condition=Ready",
            "taskqueue/emails",
            "--timeout=60s",
            namespace=namespace,
        )
        for name in ("daily-report", "hourly-thumbnails"):
            cluster.kubectl(
                "wait",
                "--for=condition=Ready",
                f"schedule/{name}",
                "--timeout=60s",
                namespace=namespace,
            )
        # The chart's WorkerPool is measured and scaled under the same RBAC: with no work, the
        # worker Deployment (kwok pods, no worker in them) goes to 0.
        pool = f"workerpool/{release}-worker-default"
        cluster.kubectl(
            "wait", "--for=condition=MetricsAvailable", pool, "--timeout=60s", namespace=namespace
        )
        deployment = f"deployment/{release}-worker-default"

        def scaled_to_zero() -> bool:
            return bool(cluster.get_json(deployment, namespace=namespace)["spec"]["replicas"] == 0)

        try:
            wait_for(scaled_to_zero, timeout=120, what="the idle worker Deployment at 0")
        except AssertionError as e:
            status = cluster.get_json(pool, namespace=namespace).get("status")
            raise AssertionError(f"{e}; the WorkerPool's status: {status}") from e
        every_second = {
            "apiVersion": "taskorch.io/v1alpha1",
            "kind": "Schedule",
            "metadata": {"name": "often"},
            "spec": {"schedule": "* * * * * *", "taskTemplate": {"spec": {"type": "noop"}}},
        }
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(every_second), namespace=namespace)
        wait_for(
            lambda: cluster.get_json(
                "tasks", "-l", "taskorch.io/schedule=often", namespace=namespace
            )["items"],
            timeout=30,
            what="a child of the Schedule, created by the operator's ServiceAccount",
        )
        cluster.kubectl("delete", "schedule", "often", namespace=namespace)

    api = k8s_config.new_client_from_config(config_file=str(sa_kubeconfig))
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    for forbidden in (
        lambda: core.read_namespaced_secret(f"{release}-redis", namespace),
        lambda: apps.delete_namespaced_deployment(f"{release}-worker-default", namespace),
        lambda: core.delete_namespaced_pod("any", namespace),
        lambda: k8s.RbacAuthorizationV1Api(api).list_cluster_role(),
        # Only its own Lease: not another controller's, not in another namespace.
        lambda: k8s.CoordinationV1Api(api).read_namespaced_lease("other", namespace),
        lambda: k8s.CoordinationV1Api(api).list_namespaced_lease("kube-system"),
    ):
        with pytest.raises(ApiException) as denied:
            forbidden()
        assert denied.value.status == 403
    # ...and what the autoscaler will need is granted, and the Lease it led through.
    assert apps.read_namespaced_deployment_scale(f"{release}-worker-default", namespace)
    lease = k8s.CoordinationV1Api(api).read_namespaced_lease(f"{release}-operator", namespace)
    assert lease.spec.holder_identity == ""  # released when the operator stopped

    # Upgrade keeps what the autoscaler (here: kubectl) set on the worker Deployment.
    worker = f"deployment/{release}-worker-default"
    cluster.kubectl("scale", worker, "--replicas=3", namespace=namespace)
    cluster.helm(
        "upgrade", release, CHART, "--namespace", namespace, "--set", "worker.concurrency=8"
    )
    upgraded = cluster.get_json(worker, namespace=namespace)
    assert upgraded["spec"]["replicas"] == 3
    assert "--concurrency=8" in upgraded["spec"]["template"]["spec"]["containers"][0]["args"]

    cluster.helm("uninstall", release, "--namespace", namespace)
    wait_for(
        lambda: _instance_objects(cluster, namespace, release) == [],
        timeout=90,
        what="every object of the release to be gone",
    )
    crds = cluster.kubectl("get", "crd", "-l", "app.kubernetes.io/part-of=taskorch", "-o", "name")
    assert "customresourcedefinition.apiextensions.k8s.io/tasks.taskorch.io" in crds.stdout


def test_namespaced_install_runs_tasks_with_roles_only(
    cluster: Cluster,
    namespace: str,
    release: str,
    redis_url: str,
    tmp_path: Path,
    workers: Callable[..., Proc],
) -> None:
    cluster.helm(
        "install",
        release,
        CHART,
        "--namespace",
        namespace,
        "--set",
        f"operator.watchNamespaces={{{namespace}}}",
        "--set",
        "redis.mode=external",
        "--set",
        f"redis.external.url={redis_url}",
        "--set",
        "redis.acl=true",
    )
    objects = _instance_objects(cluster, namespace, release)
    assert f"role.rbac.authorization.k8s.io/{release}-operator" in objects
    assert not any(o.startswith("clusterrole") for o in objects), objects
    sa_kubeconfig = tmp_path / "operator-sa.kubeconfig"
    with example_task_succeeds_as_operator_sa(
        cluster,
        namespace,
        release,
        redis_url,
        sa_kubeconfig,
        workers,
        "--namespace",
        namespace,
        acl=True,
    ):
        pass
    # The worker ran the example Task as the namespace's Redis user, which reaches nothing of
    # another namespace (tests/with_redis/test_redis_users.py checks every way in).
    env = redis_user_env(cluster, namespace)
    user = redis.Redis.from_url(
        redis_url,
        username=env["TASKORCH_REDIS_USERNAME"],
        password=env["TASKORCH_REDIS_PASSWORD"],
    )
    admin = redis.Redis.from_url(redis_url)
    try:
        connected_as = {c["user"] for c in admin.client_list()}
        assert f"taskorch-{namespace}" in connected_as, connected_as  # the running worker
        assert user.exists(f"taskorch:{{{namespace}/default}}:stats") == 1
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.hgetall("taskorch:{other-team/default}:config")
    finally:
        user.close()
        admin.close()
    api = k8s_config.new_client_from_config(config_file=str(sa_kubeconfig))
    with pytest.raises(ApiException) as elsewhere:
        k8s.CustomObjectsApi(api).list_namespaced_custom_object(
            "taskorch.io", "v1alpha1", "default", "tasks"
        )
    assert elsewhere.value.status == 403
