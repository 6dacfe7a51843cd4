#!/usr/bin/env python3
"""Complete, fail or heartbeat an agent's task by its Temporal task token.

Usage:
  complete_activity.py <task_token_b64> success [output_message] [--usage <json>]
  complete_activity.py <task_token_b64> failed [error_message] [--usage <json>]
  complete_activity.py <task_token_b64> heartbeat [progress]
  complete_activity.py --task-file <task.yml> success|failed|heartbeat [message] [--usage <json>]
  complete_activity.py - success|failed|heartbeat [message]   (token read from standard input)

The token is `payload.task_token` of the task file. `--task-file` and `-` keep it off the
command line, where `ps` and shell history would show it.

`--usage` says what the work cost, sent with `success` or `failed`: a JSON object with any of
cost_usd (US dollars), input_tokens, output_tokens, cache_read_tokens and turns, for example
--usage '{"cost_usd": 0.42, "input_tokens": 1200, "output_tokens": 800}'. Without it the
stage's cost is unknown. A malformed one is exit 1, and nothing is delivered.

Environment: TEMPORAL_ADDRESS (localhost:7233), TEMPORAL_NAMESPACE (default), and for mTLS
VAULT_ADDR, VAULT_ROLE_ID, VAULT_SECRET_ID_FILE, TEMPORAL_REQUIRE_TLS, TEMPORAL_TLS_SERVER_NAME.
With OTEL_EXPORTER_OTLP_ENDPOINT set, the completion is traced as part of the pipeline's trace:
the parent is the task file's payload.traceparent (--task-file), else TRACEPARENT.

`heartbeat` tells the worker the agent is alive; its progress text (one line, at most 500
characters) is what `temporal workflow describe` shows as the activity's heartbeat details.

Exit codes:
  0  the completion, failure or heartbeat was delivered
  1  usage or task token format error
  3  Temporal could not be reached
  4  the token is unknown, already used, or its attempt timed out
  5  TLS or Vault credentials could not be set up
  6  heartbeat only: the stage or its pipeline was cancelled, a newer attempt replaced this
     task, or an operator paused or reset it; stop working on it
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import agent_calls
from agent_calls import AgentCallError as CliError  # one line for stderr, and its exit code
from agent_calls import decode_token
from program_exit import (
    EXIT_CREDENTIALS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    leave,
)
from usage import Usage, UsageError, parse_usage

STATUSES = ("success", "failed", "heartbeat")
CONNECT_TIMEOUT_SECONDS = 20.0
EXPORT_TIMEOUT_SECONDS = 3.0  # a slow collector may delay the exit, never the completion


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
    task_file: Path | None  # --task-file: a heartbeat re-reads its status to tell 6 from 4
    usage: Usage | None = None  # --usage, when it says anything


def take_usage(argv: list[str]) -> tuple[list[str], Usage | None]:
    """`--usage <json>` (or `--usage=<json>`) taken out of the arguments, checked."""
    for i, arg in enumerate(argv):
        if arg == "--usage" or arg.startswith("--usage="):
            if arg == "--usage":
                if i + 1 >= len(argv):
                    raise CliError(EXIT_USAGE, "--usage needs a JSON object after it")
                text, rest = argv[i + 1], argv[:i] + argv[i + 2 :]
            else:
                text, rest = arg.removeprefix("--usage="), argv[:i] + argv[i + 1 :]
            try:
                return rest, parse_usage(text) or None
            except UsageError as err:
                raise CliError(EXIT_USAGE, f"--usage: {err}") from None
    return argv, None


def parse_args(argv: list[str]) -> Args:
    """Checks everything that needs no network."""
    if argv and argv[0] in ("-h", "--help"):
        sys.stdout.write(__doc__ or "")
        raise CliError(EXIT_OK, "")
    argv, usage = take_usage(argv)
    task_file: Path | None = None
    if argv and argv[0] == "--task-file":
        if len(argv) < 3:
            raise CliError(
                EXIT_USAGE,
                "usage: complete_activity.py --task-file <task.yml> success|failed|heartbeat "
                "[message]",
            )
        task_file = Path(argv[1])
        token, traceparent = read_task_file(task_file)
        rest = argv[2:]
    else:
        if len(argv) < 2:
            sys.stdout.write(__doc__ or "")
            raise CliError(EXIT_USAGE, "expected <task_token> success|failed|heartbeat [message]")
        token, traceparent = argv[0], None
        rest = argv[1:]
    status = rest[0]
    if status not in STATUSES:
        raise CliError(
            EXIT_USAGE, f"unknown status {status!r}: expected success, failed or heartbeat"
        )
    if usage is not None and status == "heartbeat":
        raise CliError(EXIT_USAGE, "--usage goes with success or failed, not heartbeat")
    message = rest[1] if len(rest) > 1 else ""
    if not _is_unicode(message):
        # bytes that are not UTF-8 reach Python as lone surrogates; sent on, the result cannot
        # be decoded by the workflow and its workflow task fails over and over
        raise CliError(EXIT_USAGE, "the message is not valid UTF-8 text")
    if token == "-":
        token = sys.stdin.read()
    traceparent = traceparent or os.environ.get("TRACEPARENT", "").strip() or None
    return Args(token.strip(), status, message, traceparent, task_file, usage)


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


async def deliver(token: bytes, args: Args) -> str:
    """Connect, then make the call `args.status` names; returns what a heartbeat recorded."""
    from config import load_client_settings
    from exceptions import ConfigError, CredentialError

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
    if args.status == "heartbeat":
        return await agent_calls.heartbeat(client, token, args.message, task_file=args.task_file)
    if args.status == "success":
        await agent_calls.complete(client, token, args.message, args.usage)
    else:
        await agent_calls.fail(client, token, args.message, args.usage)
    return ""


def traced(args: Args) -> contextlib.AbstractContextManager[None]:
    """The completion's span when OTEL_EXPORTER_OTLP_ENDPOINT is set; otherwise opentelemetry
    is never imported, and the CLI stays fast. A heartbeat is not traced: it ends nothing, and
    an agent sends many."""
    if args.status == "heartbeat" or not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
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
        status, message, usage = args.status, args.message, args.usage
        token = decode_token(args.token)
        with traced(args):
            recorded = asyncio.run(deliver(token, args))
    except CliError as err:
        if str(err):
            sys.stderr.write(f"complete_activity: {err}\n")
        return err.code
    except KeyboardInterrupt:
        sys.stderr.write("complete_activity: interrupted\n")
        return EXIT_INTERRUPTED
    if status == "heartbeat":
        log_event("heartbeat_recorded", progress=recorded)
    elif status == "success":
        log_event("activity_completed", output=message or "success", **_with(usage))
    else:
        log_event("activity_failed", output=message or "no details", **_with(usage))
    return EXIT_OK


def _with(usage: Usage | None) -> dict[str, Any]:
    return {"usage": usage} if usage else {}


if __name__ == "__main__":
    try:
        exit_code = main(sys.argv[1:])
    except Exception as err:  # noqa: BLE001 - one line, never a traceback
        sys.stderr.write(f"complete_activity: unexpected {type(err).__name__}: {err}\n")
        exit_code = EXIT_UNREACHABLE
    leave(exit_code)
