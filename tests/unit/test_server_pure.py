"""The dashboard's pure parts: the DAG layout, the chart's points, payload redaction."""

from __future__ import annotations

from taskorch.server.graph import NODE_H, NODE_W, layout
from taskorch.server.history import polyline
from taskorch.server.views import REDACTED, redacted

PIPELINE = {
    "steps": [
        {"name": "download"},
        {"name": "resize", "dependsOn": ["download"]},
        {"name": "thumb", "dependsOn": ["download"]},
        {"name": "upload", "dependsOn": ["resize", "thumb"]},
    ],
    "finally": [{"name": "notify"}],
}


def test_layout_puts_each_step_one_column_after_its_deepest_dependency() -> None:
    status = {
        "steps": [
            {"name": "download", "phase": "Succeeded", "attempts": 1},
            {"name": "resize", "phase": "Failed", "reason": "HandlerError"},
            {"name": "thumb", "phase": "Running", "counts": {"Succeeded": 3, "Running": 2}},
        ]
    }
    g = layout(PIPELINE, status)
    at = {n.name: n for n in g.nodes}
    columns = {
        name: (n.x - at["download"].x) // (at["resize"].x - at["download"].x)
        for name, n in at.items()
    }
    assert columns == {"download": 0, "resize": 1, "thumb": 1, "upload": 2, "notify": 3}
    assert at["resize"].y != at["thumb"].y  # stacked, not overlapping
    assert (at["download"].phase, at["upload"].phase) == ("Succeeded", "Pending")
    assert at["resize"].detail == "HandlerError" and at["download"].detail == "attempts 1"
    assert at["thumb"].detail == "Runn 2 Succ 3" and at["notify"].final
    assert len(g.edges) == 4
    e = next(e for e in g.edges if e.x2 == at["upload"].x and e.y1 == at["thumb"].y + NODE_H // 2)
    assert e.x1 == at["thumb"].x + NODE_W
    assert g.width >= at["notify"].x + NODE_W and g.height >= at["thumb"].y + NODE_H


def test_layout_survives_a_cycle_and_an_unknown_dependency() -> None:
    spec = {"steps": [{"name": "a", "dependsOn": ["b"]}, {"name": "b", "dependsOn": ["a", "zz"]}]}
    g = layout(spec, None)  # the operator refuses it (InvalidSpec); drawing must not hang
    assert {n.name for n in g.nodes} == {"a", "b"}


def test_polyline_scales_into_the_box() -> None:
    assert polyline([], 100, 10) == ""
    assert polyline([0, 5, 10], 100, 10) == "0.0,10.0 50.0,5.0 100.0,0.0"
    assert polyline([0.5, 2.0], 10, 10, top=1.0) == "0.0,5.0 10.0,0.0"  # clipped at top


def test_fields_from_secrets_are_redacted() -> None:
    assert redacted({"user": "u", "password": "p"}, ("password",)) == {
        "user": "u",
        "password": REDACTED,
    }
    assert redacted(["not", "a", "dict"], ("password",)) == ["not", "a", "dict"]


def test_finally_steps_are_laid_out_by_their_own_dependencies() -> None:
    spec = {
        "steps": [{"name": "a"}, {"name": "b", "dependsOn": ["a"]}],
        "finally": [{"name": "report"}, {"name": "cleanup", "dependsOn": ["report"]}],
    }
    at = {n.name: n for n in layout(spec, None).nodes}
    assert at["a"].x < at["b"].x < at["report"].x < at["cleanup"].x
    assert len(layout(spec, None).edges) == 2
