"""The dashboard's pure parts: the DAG layout, the chart's points, payload redaction."""

from __future__ import annotations

from typing import Any

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


def test_type_figures_come_from_the_live_workers_counts() -> None:
    from taskorch.queue.workers import WorkerPresence
    from taskorch.server.history import History

    def worker(name: str, stats: dict[str, tuple[int, int, float]]) -> WorkerPresence:
        return WorkerPresence(name, "pod", ("q",), 4, 0, False, "", "", type_stats=stats)

    history = History(inspector=cast_any(None))
    history._sample_types("ns", [worker("a", {"resize": (10, 0, 1.0)})], now=100.0)
    two = [worker("a", {"resize": (30, 5, 3.5)}), worker("b", {"resize": (5, 0, 0.5)})]
    history._sample_types("ns", two, now=110.0)
    later = [worker("b", {"resize": (9, 0, 0.9), "thumb": (4, 2, 0.6)})]  # a left; thumb new
    history._sample_types("ns", later, now=120.0)
    first, second = history.type_series("ns")["resize"]
    assert first.throughput == 3.0  # (25 + 5) ended in 10 s
    assert first.failure_ratio == 5 / 30 and first.mean_seconds == 3.0 / 30
    assert second.throughput == 0.0  # the sums fell when a left: never negative
    [thumb] = history.type_series("ns")["thumb"]  # new since the last sample: from zero
    assert (thumb.throughput, thumb.failure_ratio) == (0.6, 2 / 6)
    assert history.type_series("other") == {}


def cast_any(value: object) -> Any:
    return value
