"""Shared API pieces: the group/version, camelCase models, durations and metav1.Condition."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "taskorch.io"
VERSION = "v1alpha1"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"

Duration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN,
        max_length=32,
        json_schema_extra={"example": "30s"},
    ),
]


def duration_seconds(value: str) -> float:
    """Parse a Go-style duration such as `1m30s` or `250ms` (the shape `kubectl` users know)."""
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"not a duration: {value!r} (expected e.g. 500ms, 30s, 5m, 1h30m)")
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * unit[u] for n, u in _DURATION_PART.findall(value))


def format_duration(seconds: float) -> str:
    """The short form shown in status columns: 850ms, 12.3s, 4m10s, 2h5m."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m"


class ApiModel(BaseModel):
    """camelCase on the wire; unknown fields ignored so an older operator reads newer objects."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(ApiModel):
    """The metav1.Condition shape, so `kubectl wait --for=condition=...` works."""

    type: str = Field(description="Type of condition, e.g. Succeeded.", max_length=316)
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="A CamelCase reason for the last transition.", max_length=1024)
    message: str = Field(default="", description="A human-readable message.", max_length=32768)
    last_transition_time: datetime = Field(description="When the status last changed.")
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the condition was set from."
    )


class KeyRef(ApiModel):
    name: str = Field(description="Name of the Secret or ConfigMap in the Task's namespace.")
    key: str = Field(description="The key whose value is used.")
