"""OpenTelemetry tracing: one task is one trace, from its enqueue (SDK, HTTP API, operator)
through each attempt's claim, handler run and settle, with the W3C trace context carried in the
task itself (its `tp` field). Off, and free, unless an OTLP endpoint is configured
(OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and the `tracing` extra is
installed; the exporter reads the standard OTEL_* variables.

A Task or Workflow object's trace id is its UID (a UUID is a trace id's 128 bits), so the trace
of `kubectl get task x -o jsonpath={.metadata.uid}` is found without a lookup, and a Workflow's
span (emitted when it ends, from its creation to its end) is the parent of every step's enqueue
even across operator restarts: its span id is derived from the UID too."""

from __future__ import annotations

import contextvars
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("taskorch.tracing")

_tracer: Any = None  # set by setup(): tracing is on
_provider: Any = None  # taskorch's own provider, when it made one (flushed by shutdown())
_forced_ids: contextvars.ContextVar[tuple[int | None, int | None]] = contextvars.ContextVar(
    "taskorch_forced_ids", default=(None, None)
)


def configured() -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def setup(service: str, *, install: bool = True) -> bool:
    """Trace through the application's own OpenTelemetry SDK when it set one up (an SDK user's
    process), else export over OTLP/HTTP when an endpoint is configured; True when on.
    `install`: make taskorch's provider the process's global one (taskorch's own processes, so a
    handler's spans nest under its task's); the SDK, a library in someone else's process, keeps
    a provider of its own instead."""
    global _tracer, _provider
    if _tracer is not None:
        return True
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        if configured():
            log.warning(
                "an OTLP endpoint is set but the tracing extra is missing: pip install "
                "'taskorch[tracing]'; tracing stays off"
            )
        return False
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        _tracer = current.get_tracer("taskorch")
        return True
    if not configured():
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class ForcedIds(RandomIdGenerator):
        """Random ids, except where a caller forces them (a UID's trace and workflow span)."""

        def generate_trace_id(self) -> int:
            return _forced_ids.get()[0] or super().generate_trace_id()

        def generate_span_id(self) -> int:
            return _forced_ids.get()[1] or super().generate_span_id()

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
    provider = TracerProvider(resource=resource, id_generator=ForcedIds())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _provider = provider
    if install:
        trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer("taskorch")
    log.info("tracing: exporting spans over OTLP as %s", service)
    return True


def enabled() -> bool:
    return _tracer is not None


def shutdown() -> None:
    """Flush what is buffered (a worker's last spans) before the process exits."""
    if _provider is not None:
        _provider.shutdown()


def uid_trace_id(uid: str) -> int:
    return int(uid.replace("-", ""), 16)


def _derived_span_id(uid: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{uid}/span".encode()).digest()[:8], "big") or 1


def _context_of(traceparent: str | None) -> Any:
    if not traceparent:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


def _traceparent(span: Any) -> str:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span))
    return carrier.get("traceparent", "")


def workflow_parent(uid: str) -> str:
    """The traceparent of a Workflow's own span, known from its UID alone."""
    return f"00-{uid_trace_id(uid):032x}-{_derived_span_id(uid):016x}-01"


@contextmanager
def enqueue_span(
    namespace: str,
    queue: str,
    type_: str,
    count: int,
    *,
    parent: str | None = None,
    trace_uid: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """A producer span around an enqueue; yields the traceparent its tasks carry ("" when
    tracing is off). The parent: `parent`, else an incoming request's `traceparent` header,
    else the caller's current span; `trace_uid` starts a trace whose id is that UID."""
    if _tracer is None:
        yield ""
        return
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind

    context = _context_of(parent or (headers or {}).get("traceparent"))
    if trace_uid and context is None:
        context = Context()  # a root span: its trace id is the UID
    token = _forced_ids.set((uid_trace_id(trace_uid), None)) if trace_uid else None
    try:
        span = _tracer.start_span(
            f"taskorch.enqueue {queue}",
            context=context,
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "taskorch",
                "messaging.operation.type": "publish",
                "messaging.destination.name": queue,
                "messaging.batch.message_count": count,
                "k8s.namespace.name": namespace,
                "taskorch.task.type": type_,
            },
        )
    finally:
        if token is not None:
            _forced_ids.reset(token)
    try:
        yield _traceparent(span)
    finally:
        span.end()


def record(
    name: str, traceparent: str, start_ns: int, end_ns: int, attributes: dict[str, Any]
) -> None:
    """A span that already happened (a claim or a settle round trip), under the task's trace."""
    if _tracer is None or not traceparent:
        return
    span = _tracer.start_span(
        name, context=_context_of(traceparent), start_time=start_ns, attributes=attributes
    )
    span.end(end_time=end_ns)


def start_run(traceparent: str, type_: str, attributes: dict[str, Any]) -> Any:
    """The span of one handler run (a consumer span under the task's trace), or None."""
    if _tracer is None or not traceparent:
        return None
    from opentelemetry.trace import SpanKind

    return _tracer.start_span(
        f"taskorch.run {type_}",
        context=_context_of(traceparent),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    )


@contextmanager
def activated(span: Any) -> Iterator[None]:
    """Make `span` the current one (nothing when it is None)."""
    if span is None:
        yield
        return
    from opentelemetry import trace

    with trace.use_span(span, end_on_exit=False):
        yield


def end_run(span: Any, outcome: str, error: BaseException | None = None) -> str:
    """End a handler's span with its outcome; returns its traceparent (for the settle span)."""
    if span is None:
        return ""
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("taskorch.outcome", outcome)
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))
    tp = _traceparent(span)
    span.end()
    return tp


def workflow_span(
    uid: str, name: str, namespace: str, start_ns: int, end_ns: int, phase: str
) -> None:
    """Emit a Workflow's own span, from its creation to its end, with the ids its steps were
    enqueued under (workflow_parent)."""
    if _tracer is None:
        return
    from opentelemetry.context import Context

    token = _forced_ids.set((uid_trace_id(uid), _derived_span_id(uid)))
    try:
        span = _tracer.start_span(
            f"taskorch.workflow {name}",
            context=Context(),
            start_time=start_ns,
            attributes={
                "k8s.namespace.name": namespace,
                "taskorch.workflow.name": name,
                "taskorch.workflow.uid": uid,
                "taskorch.workflow.phase": phase,
            },
        )
    finally:
        _forced_ids.reset(token)
    span.end(end_time=end_ns)


def current_trace_id() -> str | None:
    """The trace id of the span now current, for log records."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else None
