"""The error record a worker sends with a failed attempt: type, message, reason, traceback
tail, with payload values that came from Secrets (payloadFrom) and pydantic's echo of the input
kept out, since it ends up in the Task's status, history and Events."""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

TRACEBACK_TAIL = 2000
MESSAGE_CAP = 1024
REDACTED = "[redacted]"


def _validation_message(e: ValidationError) -> str:
    """pydantic's message without `input_value=…`, which would echo the payload."""
    parts = []
    for err in e.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    return f"{e.error_count()} validation error(s) for {e.title}: " + "; ".join(parts)


def redact(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, REDACTED)
    return text


def error_record(exc: BaseException, reason: str, secrets: Iterable[str] = ()) -> dict[str, Any]:
    secrets = sorted(set(secrets), key=len, reverse=True)  # a longer secret before its prefix
    if isinstance(exc, ValidationError):
        message, tb = _validation_message(exc), None
    else:
        message = str(exc)
        tb = "".join(traceback.format_exception(exc))[-TRACEBACK_TAIL:]
    return {
        "type": type(exc).__name__,
        "message": redact(message, secrets)[:MESSAGE_CAP],
        "reason": reason,
        "traceback": redact(tb, secrets) if tb else None,
    }


def secret_values(payload: Any, fields: Iterable[str]) -> list[str]:
    """The values of `fields` in the payload, as text, for redaction."""
    if not isinstance(payload, dict):
        return []
    values = (payload.get(f) for f in fields)
    return [v if isinstance(v, str) else str(v) for v in values if v not in (None, "")]
