"""Generate CustomResourceDefinitions from the pydantic models.

pydantic emits JSON Schema; Kubernetes wants a *structural* OpenAPI v3 schema: no $ref, no
anyOf-with-null for optional fields, `x-kubernetes-int-or-string` for int|string, and
`x-kubernetes-preserve-unknown-fields` where any JSON is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel

from taskorch.api.base import GROUP, VERSION
from taskorch.api.schedule import MAX_NAME, ScheduleSpec, ScheduleStatus
from taskorch.api.task import TaskSpec, TaskStatus
from taskorch.api.taskqueue import TaskQueueSpec, TaskQueueStatus
from taskorch.api.workerpool import WorkerPoolSpec, WorkerPoolStatus
from taskorch.api.workflow import WorkflowSpec, WorkflowStatus

_DROP = {"title", "example", "examples"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    while "$ref" in node or "anyOf" in node:
        if "$ref" in node:
            target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
            node = {**target, **node}  # the field's own description wins over the model's
            continue
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) == 1:
            node = {**options[0], **node}
        elif {o.get("type") for o in options} <= {"integer", "string"}:
            node["x-kubernetes-int-or-string"] = True
        else:
            node["x-kubernetes-preserve-unknown-fields"] = True
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        # JSON Schema 2020's numeric form → OpenAPI 3.0's boolean flag that Kubernetes reads
        if isinstance(node.get(bound), int | float) and not isinstance(node[bound], bool):
            node[flag], node[bound] = node[bound], True
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or key == "$defs":
            continue
        if key == "default" and (value is None or isinstance(value, dict | list)):
            continue
        if key == "additionalProperties" and ("properties" in node or value is False):
            continue
        if key == "properties":
            out[key] = {k: _structural(v, defs) for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _structural(value, defs)
        else:
            out[key] = value
    if not out.get("type") and not out.get("x-kubernetes-int-or-string"):
        out["x-kubernetes-preserve-unknown-fields"] = True
        out.pop("type", None)
    if out.get("additionalProperties", {}).get("x-kubernetes-preserve-unknown-fields"):
        del out["additionalProperties"]  # a map of any JSON is just an object of any JSON
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _without_transition_rules(node: Any) -> Any:
    if isinstance(node, list):
        return [_without_transition_rules(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _without_transition_rules(v) for k, v in node.items()}
    rules = [r for r in out.get("x-kubernetes-validations", []) if "oldSelf" not in r["rule"]]
    if "x-kubernetes-validations" in out:
        if rules:
            out["x-kubernetes-validations"] = rules
        else:
            del out["x-kubernetes-validations"]
    return out


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="serialization")
    defs = raw.pop("$defs", {})
    out: dict[str, Any] = _structural(raw, defs)
    return out


@dataclass
class Kind:
    kind: str
    plural: str
    short_names: list[str]
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    columns: list[dict[str, Any]] = field(default_factory=list)
    root_rules: list[dict[str, Any]] = field(default_factory=list)  # CEL over the whole object
    # Templates embed other kinds' specs: their transition rules (immutability) would make the
    # template itself immutable, so they are dropped there.
    templates: bool = False
    # A /scale subresource over spec.replicas / status.replicas / status.selector (for an HPA).
    scale: bool = False


def crd(k: Kind) -> dict[str, Any]:
    schema = {
        "type": "object",
        "description": k.description,
        "required": ["spec"],
        **({"x-kubernetes-validations": k.root_rules} if k.root_rules else {}),
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": _without_transition_rules(openapi_schema(k.spec))
            if k.templates
            else openapi_schema(k.spec),
            "status": openapi_schema(k.status),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{k.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "taskorch"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": k.kind,
                "listKind": f"{k.kind}List",
                "plural": k.plural,
                "singular": k.kind.lower(),
                "shortNames": k.short_names,
                "categories": ["taskorch"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        **(
                            {
                                "scale": {
                                    "specReplicasPath": ".spec.replicas",
                                    "statusReplicasPath": ".status.replicas",
                                    "labelSelectorPath": ".status.selector",
                                }
                            }
                            if k.scale
                            else {}
                        ),
                    },
                    "additionalPrinterColumns": k.columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def _col(name: str, path: str, type_: str = "string", priority: int = 0) -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        col["priority"] = priority
    return col


TASK = Kind(
    kind="Task",
    plural="tasks",
    short_names=["tk"],
    spec=TaskSpec,
    status=TaskStatus,
    description="A unit of background work run by a taskorch worker. The operator enqueues it "
    "in Redis and reports its progress in status.",
    columns=[
        _col("Type", ".spec.type"),
        _col("Queue", ".spec.queue"),
        _col("Phase", ".status.phase"),
        _col("Attempts", ".status.attempts", "integer"),
        _col("Age", ".metadata.creationTimestamp", "date"),
        _col("Duration", ".status.duration"),
        _col("Reason", '.status.conditions[?(@.type=="Succeeded")].reason'),
        # `kubectl get tasks -o wide`: what a command or container task runs (Type is empty)
        _col("Image", ".spec.container.image", priority=1),
        _col("Command", ".spec.command", priority=1),
        _col("Worker", ".status.worker", priority=1),
    ],
)

WORKFLOW = Kind(
    kind="Workflow",
    plural="workflows",
    # not "wf": Argo Workflows has it, and clusters run both
    short_names=["twf"],
    spec=WorkflowSpec,
    status=WorkflowStatus,
    description="A DAG of steps, each run as a task by taskorch workers; upstream results flow "
    "into downstream payloads. The operator reports every step in status.",
    columns=[
        _col("Phase", ".status.phase"),
        _col("Progress", ".status.progress"),
        _col("Age", ".metadata.creationTimestamp", "date"),
        _col("Duration", ".status.duration"),
        _col("Reason", '.status.conditions[?(@.type=="Succeeded")].reason'),
    ],
)

TASKQUEUE = Kind(
    kind="TaskQueue",
    plural="taskqueues",
    # not "queue(s)": Kueue and Volcano have them
    short_names=["tq"],
    spec=TaskQueueSpec,
    status=TaskQueueStatus,
    description="A queue's policy (pause, rate limit, concurrency, retry and retention "
    "defaults), named after the queue. The operator writes it into Redis, where every worker "
    "reads it, and reports the queue's depth in status.",
    columns=[
        _col("Ready", ".status.ready", "integer"),
        _col("Active", ".status.active", "integer"),
        _col("Delayed", ".status.delayed", "integer"),
        _col("Dead", ".status.dead", "integer"),
        _col("Oldest", ".status.oldestReadyAge"),
        _col("Paused", ".spec.paused", "boolean"),
        _col("Rate", ".status.throughput"),
        _col("Age", ".metadata.creationTimestamp", "date"),
    ],
)

SCHEDULE = Kind(
    kind="Schedule",
    plural="schedules",
    short_names=["tsch"],
    spec=ScheduleSpec,
    status=ScheduleStatus,
    description="Recurring work: on each cron tick, a Task or Workflow from the template, "
    "named after the tick so that each tick fires once.",
    columns=[
        _col("Schedule", ".spec.schedule"),
        _col("TimeZone", ".spec.timeZone"),
        _col("Suspend", ".spec.suspend", "boolean"),
        _col("Active", ".status.active[*].name"),
        _col("Last-Schedule", ".status.lastScheduleTime", "date"),
        _col("Next", ".status.nextScheduleTime"),
        _col("Age", ".metadata.creationTimestamp", "date"),
    ],
    root_rules=[
        {
            "rule": f"size(self.metadata.name) <= {MAX_NAME}",
            "message": f"a Schedule's name is at most {MAX_NAME} characters (its children add "
            "the tick to it)",
        }
    ],
    templates=True,
)

WORKERPOOL = Kind(
    kind="WorkerPool",
    plural="workerpools",
    short_names=["twp"],
    spec=WorkerPoolSpec,
    status=WorkerPoolStatus,
    description="Which worker Deployment serves which queues, and how the operator scales it "
    "by queue depth (to zero and back, draining idle workers before it shrinks).",
    columns=[
        _col("Deployment", ".spec.scaleTargetRef.name"),
        _col("Replicas", ".status.replicas", "integer"),
        _col("Desired", ".status.desired", "integer"),
        _col("Backlog", ".status.backlog", "integer"),
        _col("In-Flight", ".status.inFlight", "integer"),
        _col("Busy", ".status.busy", "integer"),
        _col("Age", ".metadata.creationTimestamp", "date"),
    ],
    scale=True,
)

KINDS = [TASK, WORKFLOW, TASKQUEUE, SCHEDULE, WORKERPOOL]


def render() -> str:
    """Every CRD as one multi-document YAML, the form checked in under crds/."""
    header = "# Generated by `make crds` from taskorch.api; do not edit.\n"
    return header + yaml.safe_dump_all(
        [crd(k) for k in KINDS], sort_keys=False, default_flow_style=False, width=100
    )
