"""Our own spans: one per task file written, and complete_activity.py's completion.

The dispatch span's context goes into the task file (`payload.traceparent`, W3C), so the
completion continues the same trace. Every hook is a no-op while OpenTelemetry is off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from observability import _state
from observability.telemetry import shutdown

# Span attributes named so across all our spans; `plan` is how BuildPlan phases name their build.
SPAN_KEYS = ("build", "stage", "task_type")


def trace_fields() -> dict[str, str]:
    """Trace context to write into a task file (`payload.traceparent`, W3C), empty when off."""
    if _state.current() is None:
        return {}
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return {"traceparent": carrier["traceparent"]} if "traceparent" in carrier else {}


def _attributes(fields: dict[str, Any]) -> dict[str, Any]:
    """Span attributes from log-style fields: scalars only, and never anything token-like."""
    attrs: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None or "token" in key.lower() or "secret" in key.lower():
            continue
        attrs[key] = value if isinstance(value, bool | int | float | str) else str(value)
    if "build" not in attrs and "plan" in attrs:
        attrs["build"] = attrs["plan"]
    return attrs


@contextlib.contextmanager
def dispatch_span(**attributes: Any) -> Iterator[None]:
    """A span around writing one task file; `build`, `stage` and `task_type` also go on the
    activity's own span, so either one finds the stage."""
    state = _state.current()
    if state is None:
        yield
        return
    from opentelemetry import trace

    attrs = _attributes(attributes)
    trace.get_current_span().set_attributes({k: attrs[k] for k in SPAN_KEYS if k in attrs})
    name = f"DispatchTask:{attrs.get('task_type', 'task')}"
    with state.tracer.start_as_current_span(name, kind=trace.SpanKind.PRODUCER, attributes=attrs):
        yield


@contextlib.contextmanager
def completion_span(status: str, traceparent: str | None) -> Iterator[None]:
    """complete_activity.py's span: a child of the task's dispatch span when `traceparent` is a
    valid W3C parent (else a trace of its own). An exception leaving it marks the span failed,
    with its `code` as `exit_code`. Flushes on exit: the CLI ends with os._exit, which skips
    every atexit hook."""
    state = _state.current()
    if state is None:
        yield
        return
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract({"traceparent": traceparent or ""})
    attrs = {"completion.status": status, "traceparent.found": bool(traceparent)}
    try:
        with state.tracer.start_as_current_span(
            "CompleteActivity" if status == "success" else "FailActivity",
            context=parent,
            kind=trace.SpanKind.CLIENT,
            attributes=attrs,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except BaseException as err:
                code = getattr(err, "code", None)
                span.set_attribute("exit_code", code if isinstance(code, int) else 1)
                reason = str(err) or type(err).__name__
                span.set_status(trace.Status(trace.StatusCode.ERROR, reason))
                raise
            span.set_attribute("exit_code", 0)
    finally:
        shutdown()
