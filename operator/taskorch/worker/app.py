"""The handler registry users write their workers against.

app = taskorch.App()

@app.handler("process_image", retry=Retry(max_attempts=5, on=[TimeoutError]))
async def process_image(ctx: Context, payload: ImageJob) -> dict: ...
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_type_hints

from pydantic import TypeAdapter, ValidationError

from taskorch.worker.retry import Retry

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Context:
    """What a handler knows about the attempt it runs, and how it reports progress."""

    task_id: str
    type: str
    namespace: str
    queue: str
    attempt: int
    worker: str
    progress_reporter: Callable[[str, Any], None] = field(default=lambda _id, _v: None, repr=False)
    # Why the attempt is being interrupted, once it is: "cancel" (the user), "release" (a drain
    # hands it back), "lost" (its lease); None for a timeout, or while it runs.
    stop_reason: Callable[[], str | None] = field(default=lambda: None, repr=False)

    def progress(self, value: Any) -> None:
        """Report progress (any JSON); the latest value is stored with the task."""
        self.progress_reporter(self.task_id, value)


@dataclass
class Handler:
    name: str
    func: Callable[..., Any]
    retry: Retry | None
    timeout: float | None
    is_async: bool
    takes_payload: bool
    payload_adapter: TypeAdapter[Any] | None

    def parse_payload(self, raw: Any) -> Any:
        """Validate with the handler's payload type; raises ValidationError on bad input."""
        return raw if self.payload_adapter is None else self.payload_adapter.validate_python(raw)


class App:
    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def handler(
        self,
        name: str | None = None,
        *,
        retry: Retry | None = None,
        timeout: float | None = None,
    ) -> Callable[[F], F]:
        """Register the decorated function as the handler of `name` (default: its own name);
        the function keeps its type, so it stays callable and checkable as written."""

        def register(func: F) -> F:
            task_type = name or func.__name__
            if task_type in self.handlers:
                raise ValueError(f"handler {task_type!r} is registered twice")
            self.handlers[task_type] = Handler(
                name=task_type,
                func=func,
                retry=_normalise(retry),
                timeout=timeout,
                is_async=inspect.iscoroutinefunction(func),
                takes_payload=len(inspect.signature(func).parameters) >= 2,
                payload_adapter=_payload_adapter(func),
            )
            return func

        return register

    def include(self, other: App) -> None:
        """Serve another app's handlers too (handlers split over modules or packages)."""
        for name, handler in other.handlers.items():
            if name in self.handlers and self.handlers[name] is not handler:
                raise ValueError(f"handler {name!r} is registered twice")
            self.handlers[name] = handler


def _normalise(retry: Retry | None) -> Retry | None:
    if retry is None:
        return None
    on: Sequence[Any] = retry.on
    not_on: Sequence[Any] = retry.not_on
    return Retry(**{**retry.__dict__, "on": tuple(on), "not_on": tuple(not_on)})


def _payload_adapter(func: Callable[..., Any]) -> TypeAdapter[Any] | None:
    params = list(inspect.signature(func).parameters.values())
    if len(params) < 2:
        return None
    hints = get_type_hints(func)
    annotation = hints.get(params[1].name)
    return TypeAdapter(annotation) if annotation not in (None, Any) else None


__all__ = ["App", "Context", "Handler", "ValidationError"]
