"""Logs for everyone; traces and metrics for those who ask.

One module per concern, behind this small public face:

- `observability.logs`: structlog set-up, the stdlib bridge for the SDK's and Core's records,
  LOG_FILE, and the console / JSON renderings (LOG_FORMAT);
- `observability.redaction`: task-token redaction applied to every SDK record before rendering;
- `observability.telemetry`: OpenTelemetry and Temporal runtime set-up (client and worker
  options, init, shutdown, export error reporting), opt-in by OTEL_EXPORTER_OTLP_ENDPOINT;
- `observability.spans` and `observability.metrics`: the hooks activities, workflows and the
  CLI call; no-ops while OpenTelemetry is off.

Import-time dependencies are the standard library, `config` and `exceptions` only, so workflow
modules may import this package (inside `workflow.unsafe.imports_passed_through()`) to record
stage metrics; structlog, temporalio and opentelemetry are imported where they are used.
"""

from observability.logs import activity_logger, configure_logging, open_log_file
from observability.metrics import (
    AGENT_COST,
    AGENT_TOKENS,
    AUDIT_ROUNDS,
    BLOCK_WAIT,
    DURATION_BUCKETS,
    MAX_LABEL_VALUES,
    STAGE_DURATION,
    STAGE_FAILURES,
    TASKS_DISPATCHED,
    count_dispatch,
    record_agent_usage,
    record_audit_rounds,
    record_block_wait,
    record_stage,
)
from observability.redaction import REDACTED, redact_tokens
from observability.spans import SPAN_KEYS, completion_span, dispatch_span, trace_fields
from observability.telemetry import (
    DEFAULT_SERVICE_NAME,
    ENDPOINT_VAR,
    client_options,
    init_observability,
    public_fields,
    report_export_errors,
    service_name,
    shutdown,
    worker_options,
)

__all__ = [
    "AGENT_COST",
    "AGENT_TOKENS",
    "AUDIT_ROUNDS",
    "BLOCK_WAIT",
    "DEFAULT_SERVICE_NAME",
    "DURATION_BUCKETS",
    "ENDPOINT_VAR",
    "MAX_LABEL_VALUES",
    "REDACTED",
    "SPAN_KEYS",
    "STAGE_DURATION",
    "STAGE_FAILURES",
    "TASKS_DISPATCHED",
    "activity_logger",
    "client_options",
    "completion_span",
    "configure_logging",
    "count_dispatch",
    "dispatch_span",
    "init_observability",
    "open_log_file",
    "public_fields",
    "record_agent_usage",
    "record_audit_rounds",
    "record_block_wait",
    "record_stage",
    "redact_tokens",
    "report_export_errors",
    "service_name",
    "shutdown",
    "trace_fields",
    "worker_options",
]
