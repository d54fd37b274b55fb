"""Step payload references: `{{ steps.NAME.result.FIELD }}`, `{{ item.FIELD }}`, `{{ index }}`.

The Argo/Helm-style braces users know, with a path into the JSON result (`.field`, `[0]`). A
reference that is the whole string keeps the JSON type of what it points at (a number stays a
number, an object an object); inside a longer string it is written as text (strings as they
are, anything else as JSON). Pure: results come in as a mapping.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from taskorch.errors import TaskorchError

_PATH = r"(?:\.[A-Za-z0-9_-]+|\[[0-9]+\])*"
REFERENCE = re.compile(
    r"\{\{\s*(?:steps\.(?P<step>[a-z0-9](?:[-a-z0-9_]*[a-z0-9])?)\.result(?P<path>" + _PATH + r")"
    r"|(?P<item>item)(?P<item_path>" + _PATH + r")|(?P<index>index))\s*\}\}"
)
_SEGMENT = re.compile(r"\.([A-Za-z0-9_-]+)|\[([0-9]+)\]")


class MissingReference(TaskorchError):
    """A reference to a result (or a field of one) that is not there; the step fails with it."""


def referenced_steps(value: Any) -> set[str]:
    """The steps whose results `value` (a payload) refers to."""
    if isinstance(value, str):
        return {m["step"] for m in REFERENCE.finditer(value) if m["step"]}
    if isinstance(value, dict):
        return set().union(*(referenced_steps(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(referenced_steps(v) for v in value))
    return set()


def render(
    value: Any, results: Mapping[str, Any], item: Any = None, index: int | None = None
) -> Any:
    """`value` with every reference replaced; raises MissingReference naming the reference."""
    if isinstance(value, dict):
        return {k: render(v, results, item, index) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, results, item, index) for v in value]
    if not isinstance(value, str) or "{{" not in value:
        return value
    whole = REFERENCE.fullmatch(value.strip())
    if whole:
        return _resolve(whole, results, item, index)
    return REFERENCE.sub(lambda m: _as_text(_resolve(m, results, item, index)), value)


def _resolve(m: re.Match[str], results: Mapping[str, Any], item: Any, index: int | None) -> Any:
    if m["index"]:
        if index is None:
            raise MissingReference(f"{m[0]}: only a forEach step has an index")
        return index
    if m["item"]:
        if index is None:
            raise MissingReference(f"{m[0]}: only a forEach step has an item")
        return _walk(item, m["item_path"], m[0])
    if m["step"] not in results:
        raise MissingReference(f"{m[0]}: step {m['step']!r} has no result (not run, or skipped)")
    return _walk(results[m["step"]], m["path"], m[0])


def _walk(value: Any, path: str, reference: str) -> Any:
    for field, position in _SEGMENT.findall(path):
        if field and isinstance(value, dict) and field in value:
            value = value[field]
        elif position and isinstance(value, list) and int(position) < len(value):
            value = value[int(position)]
        else:
            where = f".{field}" if field else f"[{position}]"
            raise MissingReference(
                f"{reference}: no {where} in {json.dumps(value, default=str)[:200]}"
            )
    return value


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
