#!/usr/bin/env python3
"""Complete or fail an agent's task by its Temporal task token.

Usage:
  complete_activity.py <task_token_b64> success [output_message]
  complete_activity.py <task_token_b64> failed [error_message]
  complete_activity.py --task-file <task.yml> success|failed [message]
  complete_activity.py - success|failed [message]      (token read from standard input)

The token is `payload.task_token` of the task file. `--task-file` and `-` keep it off the
command line, where `ps` and shell history would show it.

Environment: TEMPORAL_ADDRESS (localhost:7233), TEMPORAL_NAMESPACE (default), and for mTLS
VAULT_ADDR, VAULT_ROLE_ID, VAULT_SECRET_ID_FILE, TEMPORAL_REQUIRE_TLS, TEMPORAL_TLS_SERVER_NAME.
With OTEL_EXPORTER_OTLP_ENDPOINT set, the completion is traced as part of the pipeline's trace:
the parent is the task file's payload.traceparent (--task-file), else TRACEPARENT.

Exit codes:
  0  the completion or failure was delivered
  1  usage or task token format error
  3  Temporal could not be reached
  4  the token is unknown, already used, or its attempt timed out
  5  TLS or Vault credentials could not be set up
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_UNREACHABLE = 3
EXIT_TOKEN = 4
EXIT_CREDENTIALS = 5
STATUSES = ("success", "failed")
RPC_TIMEOUT = timedelta(seconds=15)
CONNECT_TIMEOUT_SECONDS = 20.0
EXPORT_TIMEOUT_SECONDS = 3.0  # a slow collector may delay the exit, never the completion


class CliError(Exception):
    """One line for stderr, and the exit code that goes with it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def log_event(event: str, level: str = "info", **fields: Any) -> None:
    """One JSON line on stdout, in the worker's log format; never the token."""
    record = {
        "script": "complete_activity",
        "event": event,
        "level": level,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        **fields,
    }
    sys.stdout.write(json.dumps(record) + "\n")


class Args(NamedTuple):
    token: str
    status: str
    message: str
    traceparent: str | None  # W3C trace context of the dispatch, when there is one


def parse_args(argv: list[str]) -> Args:
    """Checks everything that needs no network."""
    if argv and argv[0] in ("-h", "--help"):
        sys.stdout.write(__doc__ or "")
        raise CliError(EXIT_OK, "")
    if argv and argv[0] == "--task-file":
        if len(argv) < 3:
            raise CliError(
                EXIT_USAGE,
                "usage: complete_activity.py --task-file <task.yml> success|failed [message]",
            )
        token, traceparent = read_task_file(Path(argv[1]))
        rest = argv[2:]
    else:
        if len(argv) < 2:
            sys.stdout.write(__doc__ or "")
            raise CliError(EXIT_USAGE, "expected <task_token> success|failed [message]")
        token, traceparent = argv[0], None
        rest = argv[1:]
    status = rest[0]
    if status not in STATUSES:
        raise CliError(EXIT_USAGE, f"unknown status {status!r}: expected success or failed")
    message = rest[1] if len(rest) > 1 else ""
    if not _is_unicode(message):
        # bytes that are not UTF-8 reach Python as lone surrogates; sent on, the result cannot
        # be decoded by the workflow and its workflow task fails over and over
        raise CliError(EXIT_USAGE, "the message is not valid UTF-8 text")
    if token == "-":
        token = sys.stdin.read()
    traceparent = traceparent or os.environ.get("TRACEPARENT", "").strip() or None
    return Args(token.strip(), status, message, traceparent)


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_task_file(path: Path) -> tuple[str, str | None]:
    """The task's token and, when the worker traced its dispatch, its traceparent."""
    from activities.task_files import load_task
    from exceptions import TaskFileError

    try:
        task = load_task(path)
    except TaskFileError as err:
        raise CliError(EXIT_USAGE, str(err)) from None
    payload = task.get("payload")
    token = payload.get("task_token") if isinstance(payload, dict) else None
    if not isinstance(token, str) or not token:
        raise CliError(EXIT_USAGE, f"{path} has no payload.task_token")
    traceparent = payload.get("traceparent") if isinstance(payload, dict) else None
    return token, traceparent if isinstance(traceparent, str) and traceparent else None


def decode_token(text: str) -> bytes:
    if not text:
        raise CliError(EXIT_USAGE, "invalid task token: it is empty")
    try:
        token = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CliError(EXIT_USAGE, "invalid task token: not standard base64") from None
    if not token:
        raise CliError(EXIT_USAGE, "invalid task token: it is empty")
    return token


async def deliver(token: bytes, status: str, message: str) -> None:
    from config import load_client_settings
    from exceptions import PHASE_FAILED, ConfigError, CredentialError

    try:
        settings = load_client_settings()
    except ConfigError as err:
        tls_var = str(err).startswith(("TEMPORAL_REQUIRE_TLS", "VAULT_", "TEMPORAL_TLS"))
        raise CliError(EXIT_CREDENTIALS if tls_var else EXIT_UNREACHABLE, str(err)) from None
    try:
        import vault

        tls = vault.tls_config(settings, log_event)
    except CredentialError as err:
        raise CliError(EXIT_CREDENTIALS, str(err)) from None
    if tls is not None:
        log_event("tls_enabled", vault_addr=settings.vault_addr)

    from temporalio.client import Client
    from temporalio.exceptions import ApplicationError
    from temporalio.service import RPCError, RPCStatusCode

    try:
        client = await asyncio.wait_for(
            Client.connect(
                settings.temporal_address, namespace=settings.temporal_namespace, tls=tls or False
            ),
            CONNECT_TIMEOUT_SECONDS,
        )
    except TimeoutError:
        over = " over TLS" if tls else ""
        raise CliError(
            EXIT_UNREACHABLE,
            f"cannot reach Temporal at {settings.temporal_address}{over}: "
            f"no answer within {CONNECT_TIMEOUT_SECONDS:.0f} s",
        ) from None
    except RuntimeError as err:
        from temporal_connect import describe_connect_error

        raise CliError(
            EXIT_UNREACHABLE,
            describe_connect_error(settings.temporal_address, err, tls is not None),
        ) from None
    handle = client.get_async_activity_handle(task_token=token)
    try:
        if status == "success":
            await handle.complete({"status": "success", "output": message}, rpc_timeout=RPC_TIMEOUT)
        else:
            await handle.fail(
                ApplicationError(
                    message or "Phase failed", type=PHASE_FAILED, non_retryable=True
                ),
                rpc_timeout=RPC_TIMEOUT,
            )
    except RPCError as err:
        raise CliError(*_rpc_error(err, RPCStatusCode)) from None


def _rpc_error(err: Any, codes: Any) -> tuple[int, str]:
    if err.status == codes.NOT_FOUND:
        return EXIT_TOKEN, (
            "task token not accepted: the activity is already completed, timed out, or unknown"
        )
    if err.status == codes.INVALID_ARGUMENT:
        if "different namespace" in err.message:  # the server's words; the token itself is fine
            return EXIT_USAGE, (
                "invalid task token: it was issued in another namespace than "
                "TEMPORAL_NAMESPACE names"
            )
        return EXIT_USAGE, "invalid task token: the server cannot decode it"
    if err.status in (codes.UNAVAILABLE, codes.DEADLINE_EXCEEDED, codes.CANCELLED):
        return EXIT_UNREACHABLE, f"cannot reach Temporal: {err.message.splitlines()[0]}"
    if err.status in (codes.PERMISSION_DENIED, codes.UNAUTHENTICATED):
        return EXIT_CREDENTIALS, f"Temporal refused the credentials: {err.message}"
    return EXIT_UNREACHABLE, f"Temporal error {err.status.name}: {err.message.splitlines()[0]}"


def traced(args: Args) -> contextlib.AbstractContextManager[None]:
    """The completion's span when OTEL_EXPORTER_OTLP_ENDPOINT is set; otherwise opentelemetry
    is never imported, and the CLI stays fast."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        return contextlib.nullcontext()
    import observability

    def warn(event: str, **fields: Any) -> None:
        log_event(event, level="warning", **fields)

    observability.report_export_errors(warn)
    observability.init_observability(export_timeout=EXPORT_TIMEOUT_SECONDS, warn=warn)
    return observability.completion_span(args.status, args.traceparent)


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
        status, message = args.status, args.message
        token = decode_token(args.token)
        with traced(args):
            asyncio.run(deliver(token, status, message))
    except CliError as err:
        if str(err):
            sys.stderr.write(f"complete_activity: {err}\n")
        return err.code
    except KeyboardInterrupt:
        sys.stderr.write("complete_activity: interrupted\n")
        return 130
    if status == "success":
        log_event("activity_completed", output=message or "success")
    else:
        log_event("activity_failed", output=message or "no details")
    return EXIT_OK


def _exit(code: int) -> NoReturn:
    """Leave without interpreter teardown: it can crash after the work is done (docs/DESIGN.md)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    try:
        exit_code = main(sys.argv[1:])
    except Exception as err:  # noqa: BLE001 - one line, never a traceback
        sys.stderr.write(f"complete_activity: unexpected {type(err).__name__}: {err}\n")
        exit_code = EXIT_UNREACHABLE
    _exit(exit_code)
