"""The error record a worker sends with a failed attempt: type, message, reason, traceback
tail, with payload values that came from Secrets (payloadFrom) and pydantic's echo of the input
kept out, since it ends up in the Task's status, history and Events."""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from taskorch.errors import AttemptFailed

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


def _forms(secret: str) -> set[str]:
    """The ways a value shows up in error text: as is, as repr() and JSON write it (a PEM's
    newlines become \\n), and line by line."""
    forms = {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1]}
    forms |= {line for line in secret.splitlines() if len(line.strip()) >= 4}
    return {f for f in forms if f}


def redact(text: str, secrets: Iterable[str]) -> str:
    forms = sorted(set().union(*(_forms(s) for s in secrets)), key=len, reverse=True)
    for form in forms:  # the longest first, so a value is replaced before any of its parts
        text = text.replace(form, REDACTED)
    return text


def error_record(exc: BaseException, reason: str, secrets: Iterable[str] = ()) -> dict[str, Any]:
    secrets = [s for s in secrets if s]
    if isinstance(exc, ValidationError):
        message, tb = _validation_message(exc), None
    elif isinstance(exc, AttemptFailed):
        message, tb = str(exc), exc.details
    else:
        message = str(exc)
        tb = "".join(traceback.format_exception(exc))
    # Redacted before it is cut: a secret across the cut would leave its tail.
    return {
        "type": type(exc).__name__,
        "message": redact(message, secrets)[:MESSAGE_CAP],
        "reason": reason,
        "traceback": redact(tb, secrets)[-TRACEBACK_TAIL:] if tb else None,
    }


def secret_values(payload: Any, fields: Iterable[str]) -> list[str]:
    """The values of `fields` in the payload, as text, for redaction."""
    if not isinstance(payload, dict):
        return []
    values = (payload.get(f) for f in fields)
    return [v if isinstance(v, str) else str(v) for v in values if v not in (None, "")]
