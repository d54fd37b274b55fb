"""A Workflow's DAG laid out for drawing: each step in a column by its depth (the longest chain of
dependencies before it), stacked within the column, with an edge per dependency. Pure: the
dashboard turns it into SVG."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 176, 44, 56, 18, 10


@dataclass(frozen=True)
class Node:
    name: str
    phase: str
    detail: str  # attempts, forEach counts or the failure reason
    x: int
    y: int
    final: bool = False  # a `finally` step


@dataclass(frozen=True)
class Edge:
    x1: int
    y1: int
    x2: int
    y2: int


@dataclass(frozen=True)
class Layout:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int


def _detail(summary: dict[str, Any]) -> str:
    if summary.get("counts"):
        return " ".join(f"{k[:4]} {v}" for k, v in sorted(summary["counts"].items()))
    if summary.get("reason") and summary.get("phase") in ("Failed", "Skipped", "Cancelled"):
        return str(summary["reason"])
    if summary.get("attempts"):
        return f"attempts {summary['attempts']}"
    return ""


def layout(spec: dict[str, Any], status: dict[str, Any] | None) -> Layout:
    """Columns by dependency depth; `finally` steps in a last column of their own."""
    steps = list(spec.get("steps") or [])
    finals = list(spec.get("finally") or [])
    summaries = {s["name"]: s for s in (status or {}).get("steps") or []}
    deps = {s["name"]: list(s.get("dependsOn") or []) for s in [*steps, *finals]}
    final_names = {f["name"] for f in finals}
    depth: dict[str, int] = {}

    def depth_of(name: str, seen: frozenset[str] = frozenset()) -> int:
        # finally steps depend only on each other (the model says so), after every step
        if name not in depth:
            group = final_names if name in final_names else deps.keys() - final_names
            known = [d for d in deps.get(name, []) if d in group and d not in seen]
            depth[name] = 1 + max((depth_of(d, seen | {name}) for d in known), default=-1)
        return depth[name]

    columns: dict[int, list[str]] = {}
    for s in steps:
        columns.setdefault(depth_of(s["name"]), []).append(s["name"])
    after = max(columns, default=-1) + 1
    for f in finals:
        columns.setdefault(after + depth_of(f["name"]), []).append(f["name"])
    pos: dict[str, tuple[int, int]] = {}
    nodes = []
    for col, names in sorted(columns.items()):
        for row, name in enumerate(names):
            x, y = PAD + col * (NODE_W + GAP_X), PAD + row * (NODE_H + GAP_Y)
            pos[name] = (x, y)
            summary = summaries.get(name, {})
            nodes.append(
                Node(
                    name=name,
                    phase=str(summary.get("phase", "Pending")),
                    detail=_detail(summary),
                    x=x,
                    y=y,
                    final=name in final_names,
                )
            )
    edges = [
        Edge(pos[d][0] + NODE_W, pos[d][1] + NODE_H // 2, pos[name][0], pos[name][1] + NODE_H // 2)
        for name, ds in deps.items()
        for d in ds
        if d in pos
    ]
    width = PAD * 2 + len(columns) * NODE_W + max(0, len(columns) - 1) * GAP_X
    rows = max((len(n) for n in columns.values()), default=0)
    height = PAD * 2 + rows * NODE_H + max(0, rows - 1) * GAP_Y
    return Layout(nodes, edges, width, height)
