"""Logs for everyone; traces and metrics for those who ask.

Logging is structlog JSON, one object per line, to stdout and to LOG_FILE when set; the Temporal
SDK's own stdlib logging, and Core's forwarded log lines, go through the same renderer, with task
tokens redacted (`redact_tokens`). OpenTelemetry is opt-in exactly as the
original: nothing from `opentelemetry` is imported unless OTEL_EXPORTER_OTLP_ENDPOINT is set.

When it is set:
- traces: the Temporal SDK's `TracingInterceptor` on the client (and so on every worker built
  from it) gives spans for starting and running workflows and activities; `dispatch_span()` adds
  one span per task file written, whose context goes into the file (`payload.traceparent`) so
  that complete_activity.py continues the same trace. A workflow started by a client without
  tracing (e.g. `temporal workflow start`) still gets one trace: its id is the run id.
- metrics: the SDK's own runtime metrics (`temporal_*`) and ours (`build_worker.*`) are exported
  by the Temporal Core's OTLP exporter. Ours go through Temporal's metric meters, so they can be
  recorded from activities and, replay-safely, from workflow code.

Import-time dependencies are the standard library, `config` and `exceptions` only, so workflow
modules may import this one (inside `workflow.unsafe.imports_passed_through()`) to record stage
metrics; structlog, temporalio and opentelemetry are imported where they are used.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from config import log_level_number
from exceptions import ConfigError

if TYPE_CHECKING:
    from temporalio.common import MetricMeter
    from temporalio.runtime import Runtime

ENDPOINT_VAR = "OTEL_EXPORTER_OTLP_ENDPOINT"
DEFAULT_SERVICE_NAME = "temporal-build-worker"
METRIC_PERIOD_SECONDS = 1.0  # the Core exporter's period; shutdown waits one more to flush
CORE_LOG_FORWARD_SECONDS = 0.01  # how often Core hands its buffered log lines to Python

# Our metrics. Labels are closed vocabularies (task types, stage names, outcomes): never build
# names, ids or paths, which would make one time series per build.
TASKS_DISPATCHED = "build_worker.tasks.dispatched"
STAGE_DURATION = "build_worker.stage.duration"
STAGE_FAILURES = "build_worker.stage.failures"
BLOCK_WAIT = "build_worker.block.wait"
# Stages run from seconds to the 7-day block window; Core's default buckets stop far lower.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400,
                    259200, 604800)
MAX_LABEL_VALUES = 64  # per label: past this, new values are recorded as "other"

# Span attributes named so across all our spans; `plan` is how BuildPlan phases name their build.
SPAN_KEYS = ("build", "stage", "task_type")


# --- Logging -------------------------------------------------------------------------------------


class _TeeLogger:
    """A structlog logger writing each rendered line to every stream (stdout, LOG_FILE)."""

    def __init__(self, streams: list[TextIO]) -> None:
        self._streams = streams

    def msg(self, message: str) -> None:
        for stream in self._streams:
            try:
                stream.write(message + "\n")
                stream.flush()
            except (OSError, ValueError):
                pass  # a closed or full log must not take the worker down

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _sdk_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What the SDK attaches to its records, as fields: the activity's or workflow's identity
    (under our names), and for Core's forwarded lines their target and fields."""
    fields: dict[str, Any] = {}
    act = getattr(record, "temporal_activity", None)
    if isinstance(act, dict):
        fields.update(
            workflow_id=act.get("workflow_id"),
            run_id=act.get("workflow_run_id"),
            activity=act.get("activity_type"),
            attempt=act.get("attempt"),
        )
    wf = getattr(record, "temporal_workflow", None)
    if isinstance(wf, dict):
        fields.update(
            workflow_id=wf.get("workflow_id"),
            run_id=wf.get("run_id"),
            workflow=wf.get("workflow_type"),
            attempt=wf.get("attempt"),
        )
    core = getattr(record, "temporal_log", None)  # a line forwarded from the SDK's Rust core
    if core is not None:
        fields.update(core_target=getattr(core, "target", None),
                      core_fields=getattr(core, "fields", None) or None)
    return {k: v for k, v in fields.items() if v is not None}


# Task tokens are bearer credentials, and the SDK prints them: its DEBUG lines as Python bytes
# reprs ("Running activity X (token b'...')") and protobuf text ("task_token: \"...\""), Core's
# warnings as base64 ("TaskToken(CiQ...)"). Every SDK record is redacted before it is rendered.
REDACTED = "<redacted>"
_TOKEN_PATTERNS = (
    # a Python bytes literal, whatever it holds: the SDK has no other bytes worth printing
    (re.compile(r"""(?<![\w'"])b(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")"""),
     f"b'{REDACTED}'"),
    # a protobuf text field holding a token
    (re.compile(r'(task_token\s*[:=]\s*)"(?:[^"\\\n]|\\.)*"'), f'\\1"{REDACTED}"'),
    (re.compile(r"TaskToken\([^)]*\)"), f"TaskToken({REDACTED})"),
    # a token in base64 that arrives some other way: a long run of the base64 alphabet
    # (tokens are 100-300 characters), mixing upper and lower case and digits as paths,
    # ids and hex digests of that length do not
    (re.compile(r"(?<![A-Za-z0-9+/])(?=[A-Za-z0-9+/]*[a-z])(?=[A-Za-z0-9+/]*[A-Z])"
                r"(?=[A-Za-z0-9+/]*[0-9])[A-Za-z0-9+/]{80,}={0,2}"), REDACTED),
)


def redact_tokens(text: str) -> str:
    """`text` without anything that could be a task token (bytes repr, protobuf text, base64)."""
    for pattern, replacement in _TOKEN_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redacted(value: Any, key: str = "") -> Any:
    if "token" in key.lower():
        return REDACTED
    if isinstance(value, bytes):
        return f"b'{REDACTED}'"
    if isinstance(value, str):
        return redact_tokens(value)
    if isinstance(value, dict):
        return {k: _redacted(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


class _StdlibToStructlog(logging.Handler):
    """Sends the SDK's stdlib records through the same JSON renderer, with their identity,
    redacted of task tokens (message, Core's fields and any traceback)."""

    _formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            import structlog

            fields = {k: _redacted(v, k) for k, v in _sdk_fields(record).items()}
            if record.exc_info:
                fields["exception"] = redact_tokens(
                    self._formatter.formatException(record.exc_info))
            structlog.get_logger(record.name).log(
                record.levelno, redact_tokens(record.getMessage()), logger=record.name, **fields
            )
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


_log_file: TextIO | None = None


def open_log_file(path: Path) -> TextIO:
    """Append-only, created 0600: log lines may name builds and paths.

    A path that cannot be opened is a configuration error (one line, exit 2), not a traceback.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as err:
        reason = err.strerror or str(err)
        raise ConfigError(f"LOG_FILE={str(path)!r} cannot be opened: {reason}") from None
    return os.fdopen(fd, "a", encoding="utf-8", buffering=1)


def _add_trace_context(
    _: Any, __: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """With tracing on, each line names the trace and span it belongs to, for log-to-trace."""
    if _state is not None and "trace_id" not in event:
        from opentelemetry import trace

        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            event["trace_id"] = trace.format_trace_id(ctx.trace_id)
            event["span_id"] = trace.format_span_id(ctx.span_id)
    return event


def configure_logging(level: str = "INFO", log_file: Path | None = None, **bind: Any) -> None:
    import structlog
    from temporalio import activity, workflow

    global _log_file
    streams: list[TextIO] = [sys.stdout]
    if log_file is not None:
        if _log_file is not None:
            _log_file.close()
        _log_file = open_log_file(log_file)
        streams.append(_log_file)
    number = log_level_number(level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_trace_context,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        context_class=dict,
        logger_factory=lambda *_: _TeeLogger(streams),
        cache_logger_on_first_use=False,
    )
    if bind:
        structlog.contextvars.bind_contextvars(**bind)
    # The SDK's adapters would also append their details to the message text; we render them
    # as fields (see _sdk_fields), so the message stays the message.
    activity.logger.activity_info_on_message = False
    workflow.logger.workflow_info_on_message = False
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StdlibToStructlog):
            root.removeHandler(handler)
    root.addHandler(_StdlibToStructlog())
    # The SDK also reports through `warnings` (e.g. "Cannot find activity to cancel for token
    # b'...'"): as log records, those are redacted and rendered like the rest.
    logging.captureWarnings(True)
    root.setLevel(max(number, logging.INFO) if number > logging.DEBUG else logging.DEBUG)


def activity_logger(**extra: Any) -> Any:
    """A logger carrying the running activity's identity, as every activity line should."""
    import structlog
    from temporalio import activity

    info = activity.info()
    return structlog.get_logger("activity").bind(
        workflow_id=info.workflow_id,
        run_id=info.workflow_run_id,
        activity=info.activity_type,
        attempt=info.attempt,
        **extra,
    )


# --- OpenTelemetry set-up ------------------------------------------------------------------------


@dataclass
class _Otel:
    """What init_observability() set up; None while OpenTelemetry is off."""

    endpoint: str
    service_name: str
    tracer_provider: Any  # opentelemetry.sdk.trace.TracerProvider
    tracer: Any  # opentelemetry.trace.Tracer
    client_options: dict[str, Any] | None = None  # built on first use: the worker needs them,
    runtime: Runtime | None = None  # the CLI does not


_state: _Otel | None = None

Warn = Callable[..., None]


def _structlog_warning(event: str, **fields: Any) -> None:
    import structlog

    structlog.get_logger("observability").warning(event, **fields)


class _ExportErrors(logging.Handler):
    """Hands the OTel SDK's export errors to `warn`, for processes without the JSON log."""

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
    global _state
    endpoint = os.environ.get(ENDPOINT_VAR, "").strip()
    if not endpoint:
        return False
    if _state is not None:
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
    _state = _Otel(
        endpoint=endpoint,
        service_name=name,
        tracer_provider=provider,
        tracer=provider.get_tracer("temporal-build-worker"),
    )
    return True


def public_fields() -> dict[str, str]:
    """What `otel_enabled` logs: the endpoint without any userinfo or query, and the service."""
    from urllib.parse import urlsplit

    if _state is None:
        return {}
    parts = urlsplit(_state.endpoint if "://" in _state.endpoint else f"//{_state.endpoint}")
    host = parts.netloc.rpartition("@")[2]
    return {
        "endpoint": f"{parts.scheme}://{host}" if parts.scheme else host,
        "service_name": _state.service_name,
    }


def _core_metrics_url(endpoint: str) -> str:
    """Core needs a URL; a bare host:port is read as the Python exporters read it."""
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "").strip() or endpoint
    if "://" in endpoint:
        return endpoint
    insecure = os.environ.get("OTEL_EXPORTER_OTLP_INSECURE", "").strip().lower() == "true"
    return f"{'http' if insecure else 'https'}://{endpoint}"


def _core_logging() -> Any:
    """Core's own log lines (WARN and up) forwarded to stdlib logging, hence to the JSON log,
    redacted like the SDK's: written by Core itself, to stdout, they carry task tokens."""
    from temporalio.runtime import LogForwardingConfig, LoggingConfig, TelemetryFilter

    return LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(
            logger=logging.getLogger("temporalio.core"),
            append_target_to_name=False,  # _sdk_fields renders target and fields
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


def _telemetry_runtime(state: _Otel) -> Runtime:
    """A Temporal runtime exporting the SDK's metrics, and ours, over OTLP/gRPC.

    Core's own log lines are forwarded to stdlib logging, and so reach the JSON log.
    """
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
                histogram_bucket_overrides={
                    STAGE_DURATION: DURATION_BUCKETS,
                    BLOCK_WAIT: DURATION_BUCKETS,
                },
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
    exporting metrics; either way a runtime that forwards Core's logs to the (redacting) JSON
    log. Built once; every worker built from the client inherits the interceptor."""
    if _state is None:
        return {"runtime": _logging_runtime()}
    if _state.client_options is None:
        try:
            _state.runtime = _telemetry_runtime(_state)
        except ValueError as err:  # Core's URL parser has the last word on the endpoint
            raise ConfigError(f"{ENDPOINT_VAR}={_state.endpoint!r} is not usable: {err}") from None
        _state.client_options = {
            "interceptors": [_tracing_interceptor(_state.tracer)],
            "runtime": _state.runtime,
        }
    return dict(_state.client_options)


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
    global _state
    state, _state = _state, None
    if state is None:
        if _log_runtime is not None:
            time.sleep(CORE_LOG_FORWARD_SECONDS * 5)
        return
    if state.runtime is not None:
        time.sleep(METRIC_PERIOD_SECONDS + 0.5)
    state.tracer_provider.shutdown()


# --- Traces: hooks used by the activities and the CLI ---------------------------------------------


def trace_fields() -> dict[str, str]:
    """Trace context to write into a task file (`payload.traceparent`, W3C), empty when off."""
    if _state is None:
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
    if _state is None:
        yield
        return
    from opentelemetry import trace

    attrs = _attributes(attributes)
    trace.get_current_span().set_attributes({k: attrs[k] for k in SPAN_KEYS if k in attrs})
    name = f"DispatchTask:{attrs.get('task_type', 'task')}"
    with _state.tracer.start_as_current_span(name, kind=trace.SpanKind.PRODUCER, attributes=attrs):
        yield


@contextlib.contextmanager
def completion_span(status: str, traceparent: str | None) -> Iterator[None]:
    """complete_activity.py's span: a child of the task's dispatch span when `traceparent` is a
    valid W3C parent (else a trace of its own). An exception leaving it marks the span failed,
    with its `code` as `exit_code`. Flushes on exit: the CLI ends with os._exit, which skips
    every atexit hook."""
    if _state is None:
        yield
        return
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract({"traceparent": traceparent or ""})
    attrs = {"completion.status": status, "traceparent.found": bool(traceparent)}
    try:
        with _state.tracer.start_as_current_span(
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


# --- Metrics -------------------------------------------------------------------------------------


def _meter() -> MetricMeter:
    """Temporal's metric meter for where we are: the workflow's (replay-safe), the activity's
    (both add namespace, task queue and type labels), else the telemetry runtime's."""
    from temporalio import activity, workflow
    from temporalio.common import MetricMeter

    if workflow.in_workflow():
        return workflow.metric_meter()
    if activity.in_activity():
        return activity.metric_meter()
    runtime = _state.runtime if _state is not None else None
    return runtime.metric_meter if runtime is not None else MetricMeter.noop


_label_values: dict[str, set[str]] = {}


def _label(key: str, value: str) -> str:
    """Keep a label's cardinality bounded even if a caller passes something unbounded."""
    seen = _label_values.setdefault(key, set())
    if value in seen:
        return value
    if len(seen) >= MAX_LABEL_VALUES:
        return "other"
    seen.add(value)
    return value


def count_dispatch(task_type: str) -> None:
    """Count one task file dispatched, labelled by task type only (bounded cardinality)."""
    _meter().create_counter(
        TASKS_DISPATCHED, "Task files written for agents", "{task}"
    ).add(1, {"task_type": _label("task_type", task_type)})


def record_stage(stage: str, seconds: float, outcome: str) -> None:
    """Record one finished stage: its duration, and a failure unless `outcome` is "success".

    `stage` is a stage name from a fixed set ("prefab", "implement", "audit", "triage", "fixes",
    "close"; BuildPlan uses "phase"), never a build name or number. `outcome` is "success",
    "failed" (the agent reported failure), "timed_out", "cancelled" or "error". Callable from
    activities and from workflow code, where Temporal's workflow meter skips replays; when
    metrics are off it costs next to nothing.
    """
    meter = _meter()
    stage = _label("stage", stage)
    meter.create_histogram_float(
        STAGE_DURATION, "Time from a stage's start to its end", "s"
    ).record(max(seconds, 0.0), {"stage": stage, "outcome": _label("outcome", outcome)})
    if outcome != "success":
        meter.create_counter(STAGE_FAILURES, "Stages that did not succeed", "{stage}").add(
            1, {"stage": stage}
        )


def record_block_wait(seconds: float, decision: str) -> None:
    """Record how long a security block waited for the operator, by how it ended:
    `decision` is "approved", "rejected" or "timed_out". Callable like record_stage()."""
    _meter().create_histogram_float(
        BLOCK_WAIT, "Time a pipeline waited at a security block", "s"
    ).record(max(seconds, 0.0), {"decision": _label("decision", decision)})
