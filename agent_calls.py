"""The three calls an agent makes on its task token: heartbeat, complete, fail.

complete_activity.py is the command line over this module, and an in-process agent runner calls
it directly with a client it has already connected. Every refusal is one `AgentCallError`
carrying the CLI's exit code and a one-line message that never holds the token.

Importing this module stays cheap (no temporalio, no pydantic): the CLI imports it at start and
must stay fast; the SDK comes in with the first call, when it is needed anyway.
"""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from program_exit import EXIT_CREDENTIALS, EXIT_STOP, EXIT_TOKEN, EXIT_UNREACHABLE, EXIT_USAGE

if TYPE_CHECKING:
    from temporalio.client import Client

    from usage import Usage

RPC_TIMEOUT = timedelta(seconds=15)
MAX_PROGRESS_LEN = 500
NOT_ACCEPTED = "task token not accepted: the activity is already completed, timed out, or unknown"
STOP = "stop: the stage or its pipeline was cancelled, or a newer attempt replaced this task"


class AgentCallError(Exception):
    """Why a call did not land: `code` is the CLI's exit code, `str(err)` one line."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def decode_token(text: str) -> bytes:
    """`payload.task_token` as written in a task file (standard base64) to the token's bytes."""
    if not text:
        raise AgentCallError(EXIT_USAGE, "invalid task token: it is empty")
    try:
        token = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise AgentCallError(EXIT_USAGE, "invalid task token: not standard base64") from None
    if not token:
        raise AgentCallError(EXIT_USAGE, "invalid task token: it is empty")
    return token


def clean_progress(text: str, token: bytes = b"") -> str:
    """An agent's progress as the heartbeat records it: one inert line of at most
    MAX_PROGRESS_LEN characters, sanitised like security findings, since operators read it.
    The token itself, pasted in by mistake, becomes `[task token]`: details are stored in the
    history and printed by `temporal workflow describe`, where a token must never appear."""
    from activities.triage import sanitize_finding

    if token:
        text = text.replace(base64.b64encode(token).decode(), "[task token]")
    return sanitize_finding(text, MAX_PROGRESS_LEN)


def completion(output: str, usage: Usage | None = None) -> dict[str, Any]:
    """What `success` sends: `{status: success, output}`, and `usage` only when some of it is
    known, so a completion without it reads as of unknown cost, never as free."""
    result: dict[str, Any] = {"status": "success", "output": output}
    if usage:
        result["usage"] = dict(usage)
    return result


async def complete(client: Client, token: bytes, output: str, usage: Usage | None = None) -> None:
    """End the stage with `completion(output, usage)`; what `success [message]` sends."""
    handle = client.get_async_activity_handle(task_token=token)
    await _call(handle.complete(completion(output, usage), rpc_timeout=RPC_TIMEOUT))


async def fail(client: Client, token: bytes, message: str, usage: Usage | None = None) -> None:
    """Fail the stage without retry (PhaseFailedError, `Phase failed` when `message` is empty);
    a known usage is the failure's one detail, `{usage: {...}}`: a failed stage costs too."""
    from temporalio.exceptions import ApplicationError

    from exceptions import PHASE_FAILED

    details = [{"usage": dict(usage)}] if usage else []
    error = ApplicationError(
        message or "Phase failed", *details, type=PHASE_FAILED, non_retryable=True
    )
    handle = client.get_async_activity_handle(task_token=token)
    await _call(handle.fail(error, rpc_timeout=RPC_TIMEOUT))


async def heartbeat(
    client: Client, token: bytes, progress: str = "", *, task_file: Path | None = None
) -> str:
    """Record a heartbeat whose details are the cleaned `progress`; returns what was recorded.

    EXIT_STOP when the agent should stop: the server asks for cancellation (or reports a pause
    or reset) while the activity is open; or the activity is gone and `task_file` (re-read now)
    is marked cancelled or superseded, its workflow was cancelled, or a newer attempt of it is
    pending. Otherwise a gone activity is EXIT_TOKEN.
    """
    from temporalio.client import AsyncActivityCancelledError
    from temporalio.service import RPCError, RPCStatusCode

    details = clean_progress(progress, token)
    handle = client.get_async_activity_handle(task_token=token)
    try:
        await handle.heartbeat(*([details] if details else []), rpc_timeout=RPC_TIMEOUT)
    except AsyncActivityCancelledError as err:
        raise AgentCallError(EXIT_STOP, _why_cancelled(err.details)) from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND and await _told_to_stop(client, token, task_file):
            raise AgentCallError(EXIT_STOP, STOP) from None
        raise rpc_error(err) from None
    return details


def _why_cancelled(details: Any) -> str:
    """The server also flags an operator's `temporal activity pause` or `reset` this way; the
    attempt is to stop then too, and the line says which."""
    if details is not None and not details.cancel_requested:
        if details.paused:
            return "stop: an operator paused this activity"
        if details.reset:
            return "stop: an operator reset this activity"
    return STOP


async def _call(call: Any) -> None:
    from temporalio.service import RPCError

    try:
        await call
    except RPCError as err:
        raise rpc_error(err) from None


def rpc_error(err: Any) -> AgentCallError:
    """A server refusal (a temporalio RPCError) as the exit code and line an agent acts on."""
    from temporalio.service import RPCStatusCode as codes

    if err.status == codes.NOT_FOUND:
        return AgentCallError(EXIT_TOKEN, NOT_ACCEPTED)
    if err.status == codes.INVALID_ARGUMENT:
        if "different namespace" in err.message:  # the server's words; the token itself is fine
            return AgentCallError(
                EXIT_USAGE,
                "invalid task token: it was issued in another namespace than TEMPORAL_NAMESPACE "
                "names",
            )
        return AgentCallError(EXIT_USAGE, "invalid task token: the server cannot decode it")
    first = err.message.splitlines()[0] if err.message else err.status.name
    if err.status in (codes.UNAVAILABLE, codes.DEADLINE_EXCEEDED, codes.CANCELLED):
        return AgentCallError(EXIT_UNREACHABLE, f"cannot reach Temporal: {first}")
    if err.status in (codes.PERMISSION_DENIED, codes.UNAUTHENTICATED):
        return AgentCallError(EXIT_CREDENTIALS, f"Temporal refused the credentials: {err.message}")
    return AgentCallError(EXIT_UNREACHABLE, f"Temporal error {err.status.name}: {first}")


# --- Why an activity is gone -----------------------------------------------------------------

# Field numbers of the server's task token message (temporal.server.api.token.v1.Task), which
# the SDK does not ship: the token is opaque to clients, but these fields have been stable.
_WORKFLOW_ID, _RUN_ID, _ATTEMPT, _ACTIVITY_ID = 2, 3, 5, 6


class TokenRef:
    """What a task token names: its workflow run and activity attempt."""

    def __init__(self, workflow_id: str, run_id: str, activity_id: str, attempt: int) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.activity_id = activity_id
        self.attempt = attempt


def token_ref(token: bytes) -> TokenRef | None:
    """The workflow run and activity a task token names, or None when it cannot be read."""
    from google.protobuf import empty_pb2
    from google.protobuf.message import DecodeError
    from google.protobuf.unknown_fields import UnknownFieldSet

    message = empty_pb2.Empty()
    try:
        message.ParseFromString(token)
        unknown = UnknownFieldSet(message)
        fields = {unknown[i].field_number: unknown[i].data for i in range(len(unknown))}
        ref = TokenRef(
            fields[_WORKFLOW_ID].decode(),
            fields.get(_RUN_ID, b"").decode(),
            fields.get(_ACTIVITY_ID, b"").decode(),
            int(fields.get(_ATTEMPT, 1)),
        )
    except (DecodeError, KeyError, AttributeError, TypeError, ValueError, UnicodeDecodeError):
        return None
    return ref if ref.workflow_id else None


async def _told_to_stop(client: Client, token: bytes, task_file: Path | None) -> bool:
    """Whether a gone activity ended because the agent's work was called off, not finished."""
    from activities.task_files import CANCELLED, SUPERSEDED

    if task_file is not None and _task_status(task_file) in (CANCELLED, SUPERSEDED):
        return True
    ref = token_ref(token)
    if ref is None:
        return False
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError

    try:
        description = await client.get_workflow_handle(
            ref.workflow_id, run_id=ref.run_id or None
        ).describe(rpc_timeout=RPC_TIMEOUT)
    except RPCError:
        return False
    if description.status == WorkflowExecutionStatus.CANCELED:
        return True
    # a retry of the same activity: this token's attempt was replaced by a newer one
    return any(
        pending.activity_id == ref.activity_id and pending.attempt > ref.attempt
        for pending in description.raw_description.pending_activities
    )


def _task_status(path: Path) -> str | None:
    from activities.task_files import load_task
    from exceptions import TaskFileError

    try:
        status = load_task(path).get("status")
    except TaskFileError:
        return None
    return status if isinstance(status, str) else None
