"""CEL for Workflow `when` and `forEach`, over upstream results (`steps.NAME.result`), through
cel-rust's Python binding (`common-expression-language`): Kubernetes' own admission language,
so one syntax across the CRD and the workflow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cel

from taskorch.errors import TaskorchError


class ExpressionError(TaskorchError):
    """A `when` or `forEach` that does not parse, fails, or gives the wrong type."""


def _evaluate(expression: str, results: Mapping[str, Any]) -> Any:
    context = {"steps": {name: {"result": value} for name, value in results.items()}}
    try:
        return cel.evaluate(expression, context)
    except Exception as e:  # the binding raises ValueError, KeyError, TypeError, RuntimeError
        raise ExpressionError(f"{expression!r}: {type(e).__name__}: {e}") from e


def condition(expression: str, results: Mapping[str, Any]) -> bool:
    value = _evaluate(expression, results)
    if not isinstance(value, bool):
        raise ExpressionError(f"when {expression!r} gave {value!r}, not true or false")
    return value


def items(expression: str, results: Mapping[str, Any]) -> list[Any]:
    value = _evaluate(expression, results)
    if not isinstance(value, list):
        raise ExpressionError(f"forEach {expression!r} gave {value!r}, not a list")
    return value
