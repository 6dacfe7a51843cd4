"""Logging: structlog events to stdout and, when set, to LOG_FILE; the Temporal SDK's own stdlib
logging, and Core's forwarded log lines, go through the same processors, redacted of task
tokens (observability.redaction) before any renderer sees them.

Two renderings of the same events (LOG_FORMAT):
- `json`: one JSON object per line, what PM2, log shippers and the tests read;
- `console`: structlog's ConsoleRenderer, for a person at a terminal; colours only when stdout
  is a terminal and NO_COLOR is unset; control characters in values are shown escaped, so a
  message cannot move the cursor or forge a line.
Unset, stdout decides: a terminal gets `console`, anything else (PM2, a pipe, a file) `json`.
LOG_FILE is always JSON whatever LOG_FORMAT says: it is read by programs, not by eye.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, TextIO

from config import LOG_FORMATS, log_level_number
from exceptions import ConfigError
from observability import _state
from observability.redaction import redact_tokens, redacted

Event = MutableMapping[str, Any]
Renderer = Callable[[Any, str, Event], str]


class _Sinks:
    """A structlog logger writing the console-or-JSON line to stdout, the JSON one to LOG_FILE."""

    def __init__(self, stdout: TextIO, log_file: TextIO | None) -> None:
        self._stdout = stdout
        self._file = log_file

    def msg(self, stdout: str, file: str) -> None:
        for stream, line in ((self._stdout, stdout), (self._file, file)):
            if stream is None:
                continue
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):
                pass  # a closed or full log must not take the worker down

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def resolve_format(log_format: str | None, stdout: TextIO) -> str:
    """LOG_FORMAT as given, or unset: `console` on a terminal, else `json`."""
    if log_format is not None:
        return log_format
    isatty = getattr(stdout, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


# C0 and C1 control characters; a traceback keeps its newlines and tabs, the event text does not.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LAYOUT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]


class _Quoted:
    """A string value the ConsoleRenderer must show quoted and escaped, as repr does."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return repr(self.text)


def _printable(event: Event) -> Event:
    """Control characters shown escaped (`\\x1b`, `\\n`). The ConsoleRenderer prints the event
    text and tracebacks raw, and a value raw unless it holds a space, quote or line break; here
    the first two are escaped in place and any value holding a control character is quoted."""
    for key, value in event.items():
        if not isinstance(value, str) or not _CONTROL.search(value):
            continue
        if key == "event":
            event[key] = _CONTROL.sub(_escape, value)
        elif key in ("exception", "stack"):
            event[key] = _CONTROL_BUT_LAYOUT.sub(_escape, value)
        else:
            event[key] = _Quoted(value)
    return event


def console_renderer(colors: bool = False) -> Renderer:
    """The `console` rendering: `timestamp [level] event  key=value ...`, escaped as above."""
    import structlog

    console = structlog.dev.ConsoleRenderer(colors=colors, pad_event_to=24)

    def render(logger: Any, name: str, event: Event) -> str:
        return console(logger, name, _printable(dict(event)))

    return render


def _renderers(log_format: str, stdout: TextIO) -> Callable[[Any, str, Event], dict[str, str]]:
    """The last processor: one rendering for stdout, the JSON one for LOG_FILE."""
    import structlog

    json_renderer = structlog.processors.JSONRenderer()

    def to_json(logger: Any, name: str, event: Event) -> str:
        return str(json_renderer(logger, name, event))  # json.dumps: always str

    to_stdout: Renderer = to_json
    if log_format == "console":
        colors = bool(stdout.isatty()) and "NO_COLOR" not in os.environ
        to_stdout = console_renderer(colors=colors)

    def render(logger: Any, name: str, event: Event) -> dict[str, str]:
        line = to_json(logger, name, event)
        return {
            "file": line,
            "stdout": line if to_stdout is to_json else to_stdout(logger, name, event),
        }

    return render


# The SDK's context dicts on its records, and our field name for each key it holds.
_SDK_CONTEXTS = (
    (
        "temporal_activity",
        {
            "workflow_id": "workflow_id",
            "workflow_run_id": "run_id",
            "activity_type": "activity",
            "attempt": "attempt",
        },
    ),
    (
        "temporal_workflow",
        {
            "workflow_id": "workflow_id",
            "run_id": "run_id",
            "workflow_type": "workflow",
            "attempt": "attempt",
        },
    ),
)


def _sdk_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What the SDK attaches to its records, as fields: the activity's or workflow's identity
    (under our names), and for Core's forwarded lines their target and fields."""
    fields: dict[str, Any] = {}
    for attribute, names in _SDK_CONTEXTS:
        context = getattr(record, attribute, None)
        if isinstance(context, dict):
            fields.update({ours: context.get(theirs) for theirs, ours in names.items()})
    core = getattr(record, "temporal_log", None)  # a line forwarded from the SDK's Rust core
    if core is not None:
        fields.update(
            core_target=getattr(core, "target", None),
            core_fields=getattr(core, "fields", None) or None,
        )
    return {k: v for k, v in fields.items() if v is not None}


class _StdlibToStructlog(logging.Handler):
    """Sends the SDK's stdlib records through the same processors, with their identity,
    redacted of task tokens (message, Core's fields and any traceback)."""

    _formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            import structlog

            fields = {k: redacted(v, k) for k, v in _sdk_fields(record).items()}
            if record.exc_info:
                fields["exception"] = redact_tokens(
                    self._formatter.formatException(record.exc_info)
                )
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


def _add_trace_context(_: Any, __: str, event: Event) -> Event:
    """With tracing on, each line names the trace and span it belongs to, for log-to-trace."""
    if _state.current() is not None and "trace_id" not in event:
        from opentelemetry import trace

        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            event["trace_id"] = trace.format_trace_id(ctx.trace_id)
            event["span_id"] = trace.format_span_id(ctx.span_id)
    return event


def configure_logging(
    level: str = "INFO", log_file: Path | None = None, log_format: str | None = None, **bind: Any
) -> None:
    """Set up structlog and the stdlib bridge; `log_format` is one of LOG_FORMATS or None
    (decided by stdout, see resolve_format). `bind` fields go on every line."""
    import structlog
    from temporalio import activity, workflow

    global _log_file
    if log_format is not None and log_format not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT={log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    if log_file is not None:
        if _log_file is not None:
            _log_file.close()
        _log_file = open_log_file(log_file)
    stdout, file = sys.stdout, _log_file if log_file is not None else None
    number = log_level_number(level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_trace_context,
            structlog.processors.format_exc_info,
            _renderers(resolve_format(log_format, stdout), stdout),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        context_class=dict,
        logger_factory=lambda *_: _Sinks(stdout, file),
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
