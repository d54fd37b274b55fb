"""Log setup for every taskorch process: plain text, or one JSON object a line
(`TASKORCH_LOG_FORMAT=json`, python-json-logger) carrying the task id and the trace id of the
attempt a line was logged from, so a log search finds a task's lines and its trace."""

from __future__ import annotations

import contextvars
import logging

from taskorch import tracing

TASK_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("taskorch_task", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class TaskContext(logging.Filter):
    """Adds `task_id` and `trace_id` to records logged while an attempt runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        task_id = TASK_ID.get()
        if task_id is not None:
            record.task_id = task_id
        trace_id = tracing.current_trace_id()
        if trace_id is not None:
            record.trace_id = trace_id
        return True


def configure(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(TaskContext())
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
