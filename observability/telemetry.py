"""OpenTelemetry and Temporal runtime set-up: opt-in, exactly when OTEL_EXPORTER_OTLP_ENDPOINT
is set; nothing from `opentelemetry` is imported otherwise.

- traces: the SDK's `TracingInterceptor` on the client (and so on every worker built from it)
  gives spans for starting and running workflows and activities. A workflow started by a client
  without tracing (e.g. `temporal workflow start`) still gets one trace: its id is the run id.
- metrics: a Temporal runtime whose Core exports the SDK's metrics and ours over OTLP/gRPC.
- logs: either way, the runtime forwards Core's own log lines to stdlib logging, hence to the
  redacting log (observability.logs), instead of letting Core print them with task tokens.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from exceptions import ConfigError
from observability import _state
from observability.metrics import HISTOGRAM_BUCKETS

if TYPE_CHECKING:
    from temporalio.runtime import Runtime

ENDPOINT_VAR = "OTEL_EXPORTER_OTLP_ENDPOINT"
DEFAULT_SERVICE_NAME = "temporal-build-worker"
METRIC_PERIOD_SECONDS = 1.0  # the Core exporter's period; shutdown waits one more to flush
CORE_LOG_FORWARD_SECONDS = 0.01  # how often Core hands its buffered log lines to Python

Warn = Callable[..., None]


def _structlog_warning(event: str, **fields: Any) -> None:
    import structlog

    structlog.get_logger("observability").warning(event, **fields)


class _ExportErrors(logging.Handler):
    """Hands the OTel SDK's export errors to `warn`, for processes without the worker's log."""

    def __init__(self, warn: Warn) -> None:
        super().__init__(logging.ERROR)
        self.warn = warn

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.warn("otel_export_failed", error=record.getMessage().splitlines()[0])
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def report_export_errors(warn: Warn) -> None:
    """Route the OTel SDK's own log records to `warn`: errors only (one line per failed export),
    none of its retry chatter. For complete_activity.py, whose stderr is for its own errors."""
    otel_log = logging.getLogger("opentelemetry")
    otel_log.addHandler(_ExportErrors(warn))
    otel_log.propagate = False


def service_name() -> str:
    return os.environ.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME


def init_observability(
    *, export_timeout: float | None = None, warn: Warn = _structlog_warning
) -> bool:
    """Start OpenTelemetry tracing when OTEL_EXPORTER_OTLP_ENDPOINT is set; returns whether on.

    The exporters read the standard OTEL_EXPORTER_OTLP_* variables (headers, certificates,
    timeout). When the variable is set but the packages are missing, `warn` says so once and
    everything stays off: an optional extra must not stop the worker. `export_timeout` (seconds)
    bounds each export, for short-lived processes such as complete_activity.py.
    """
    endpoint = os.environ.get(ENDPOINT_VAR, "").strip()
    if not endpoint:
        return False
    if _state.current() is not None:
        return True
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as err:
        warn(
            "otel_unavailable",
            reason=f"{ENDPOINT_VAR} is set but the OpenTelemetry packages are not installed "
            f"(missing {err.name or err}); install temporalio[opentelemetry] and "
            "opentelemetry-exporter-otlp-proto-grpc. Traces and metrics are off.",
        )
        return False
    name = service_name()
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(timeout=export_timeout)))
    trace.set_tracer_provider(provider)
    _state.replace(
        _state.Otel(
            endpoint=endpoint,
            service_name=name,
            tracer_provider=provider,
            tracer=provider.get_tracer("temporal-build-worker"),
        )
    )
    return True


def public_fields() -> dict[str, str]:
    """What `otel_enabled` logs: the endpoint without any userinfo or query, and the service."""
    from urllib.parse import urlsplit

    state = _state.current()
    if state is None:
        return {}
    parts = urlsplit(state.endpoint if "://" in state.endpoint else f"//{state.endpoint}")
    host = parts.netloc.rpartition("@")[2]
    return {
        "endpoint": f"{parts.scheme}://{host}" if parts.scheme else host,
        "service_name": state.service_name,
    }


def _core_metrics_url(endpoint: str) -> str:
    """Core needs a URL; a bare host:port is read as the Python exporters read it."""
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "").strip() or endpoint
    if "://" in endpoint:
        return endpoint
    insecure = os.environ.get("OTEL_EXPORTER_OTLP_INSECURE", "").strip().lower() == "true"
    return f"{'http' if insecure else 'https'}://{endpoint}"


def _core_logging() -> Any:
    """Core's own log lines (WARN and up) forwarded to stdlib logging, hence to our log,
    redacted like the SDK's: written by Core itself, to stdout, they carry task tokens."""
    from temporalio.runtime import LogForwardingConfig, LoggingConfig, TelemetryFilter

    return LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(
            logger=logging.getLogger("temporalio.core"),
            append_target_to_name=False,  # observability.logs renders target and fields
            prepend_target_on_message=False,
            append_log_fields_to_message=False,
        ),
    )


_log_runtime: Runtime | None = None


def _logging_runtime() -> Runtime:
    """The worker's runtime while OpenTelemetry is off: the default one, but Core's logs are
    forwarded (see _core_logging). One per process, built on first use."""
    global _log_runtime
    if _log_runtime is None:
        from temporalio.runtime import Runtime, TelemetryConfig

        _log_runtime = Runtime(telemetry=TelemetryConfig(logging=_core_logging()))
    return _log_runtime


def _telemetry_runtime(state: _state.Otel) -> Runtime:
    """A Temporal runtime exporting the SDK's metrics, and ours, over OTLP/gRPC; Core's own log
    lines are forwarded as by _logging_runtime."""
    from opentelemetry.util.re import parse_env_headers
    from temporalio.runtime import OpenTelemetryConfig, Runtime, TelemetryConfig

    headers = parse_env_headers(os.environ.get("OTEL_EXPORTER_OTLP_HEADERS", ""), liberal=True)
    return Runtime(
        telemetry=TelemetryConfig(
            logging=_core_logging(),
            metrics=OpenTelemetryConfig(
                url=_core_metrics_url(state.endpoint),
                headers=dict(headers),
                metric_periodicity=timedelta(seconds=METRIC_PERIOD_SECONDS),
                histogram_bucket_overrides=dict(HISTOGRAM_BUCKETS),
            ),
            # Core names its resource "temporal-core-sdk" unless told; ours names the service.
            global_tags={"service.name": state.service_name},
            attach_service_name=False,
        )
    )


def _run_trace_carrier(run_id: str) -> dict[str, str]:
    """A W3C parent for a workflow started without one: trace id = the run id, so every span of
    the run, before and after a replay, lands in the same trace."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()
    try:
        trace_id = uuid.UUID(run_id).hex
    except ValueError:
        trace_id = digest[:32]
    return {"traceparent": f"00-{trace_id}-{digest[32:48]}-01"}


def _tracing_interceptor(tracer: Any) -> Any:
    """The SDK's TracingInterceptor, with a deterministic parent for untraced starts.

    Without a client span (a workflow started by the `temporal` CLI or a schedule) the SDK's
    interceptor would create no workflow spans and every activity would start a trace of its own.
    """
    from temporalio import workflow
    from temporalio.contrib.opentelemetry import (
        TracingInterceptor,
        TracingWorkflowInboundInterceptor,
    )

    class RunTracedWorkflowInbound(TracingWorkflowInboundInterceptor):
        # Overrides the SDK's private loader of the start header's context (temporalio 1.35);
        # test_untraced_start_is_one_trace_named_by_run_id fails if that hook ever changes.
        def _load_workflow_context_carrier(self) -> Any:
            carrier = super()._load_workflow_context_carrier()
            if not carrier:
                carrier = self._workflow_context_carrier = dict(
                    _run_trace_carrier(workflow.info().run_id)
                )
            return carrier

    class BuildTracingInterceptor(TracingInterceptor):
        def workflow_interceptor_class(self, input: Any) -> type[TracingWorkflowInboundInterceptor]:
            super().workflow_interceptor_class(input)
            return RunTracedWorkflowInbound

    return BuildTracingInterceptor(tracer)


def client_options() -> dict[str, Any]:
    """Extra Client.connect options: when OTel is on, the tracing interceptor and the runtime
    exporting metrics; either way a runtime that forwards Core's logs to the (redacting) log.
    Built once; every worker built from the client inherits the interceptor."""
    state = _state.current()
    if state is None:
        return {"runtime": _logging_runtime()}
    if state.client_options is None:
        try:
            state.runtime = _telemetry_runtime(state)
        except ValueError as err:  # Core's URL parser has the last word on the endpoint
            raise ConfigError(f"{ENDPOINT_VAR}={state.endpoint!r} is not usable: {err}") from None
        state.client_options = {
            "interceptors": [_tracing_interceptor(state.tracer)],
            "runtime": state.runtime,
        }
    return dict(state.client_options)


def worker_options() -> dict[str, Any]:
    """Extra Worker options. None: interceptors given to the client already apply to its
    workers, and adding them here too would trace everything twice."""
    return {}


def shutdown() -> None:
    """Flush exporters on graceful shutdown (blocking: call it in a thread from async code).

    Spans are flushed at once. Core exports metrics every METRIC_PERIOD_SECONDS and has no flush
    call that survives shutdown, so when it runs we wait one period for the last export. Core
    forwards its log lines every CORE_LOG_FORWARD_SECONDS; the last ones (often warnings about
    the shutdown itself) get a few periods to arrive before the process leaves.
    """
    state = _state.replace(None)
    if state is None:
        if _log_runtime is not None:
            time.sleep(CORE_LOG_FORWARD_SECONDS * 5)
        return
    if state.runtime is not None:
        time.sleep(METRIC_PERIOD_SECONDS + 0.5)
    state.tracer_provider.shutdown()
