"""The runner's one door to Temporal for a stage: heartbeat, complete, fail by task token.

Every call site of the runner goes through these three functions, so delivery is the same code
path as `complete_activity.py heartbeat|success|failed`. `DeliveryError.code` carries that CLI's
exit-code meaning: 4 the token is unknown, used or timed out; 6 the stage or its pipeline was
cancelled (or the stage superseded) and the agent must stop; 3 Temporal did not answer.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import AsyncActivityCancelledError, Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from exceptions import PHASE_FAILED

EXIT_UNREACHABLE = 3
EXIT_TOKEN = 4
EXIT_STOP = 6
RPC_TIMEOUT = timedelta(seconds=15)


class DeliveryError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _error(err: RPCError) -> DeliveryError:
    if err.status == RPCStatusCode.NOT_FOUND:
        return DeliveryError(
            EXIT_TOKEN,
            "task token not accepted: the activity is already completed, timed out, or unknown",
        )
    return DeliveryError(EXIT_UNREACHABLE, f"Temporal error {err.status.name}: {err.message}")


async def heartbeat(client: Client, token: bytes, progress: str) -> None:
    handle = client.get_async_activity_handle(task_token=token)
    try:
        await handle.heartbeat(progress, rpc_timeout=RPC_TIMEOUT)
    except AsyncActivityCancelledError:
        raise DeliveryError(EXIT_STOP, "the stage or its pipeline was cancelled") from None
    except RPCError as err:
        raise _error(err) from None


async def complete(client: Client, token: bytes, output: str) -> None:
    handle = client.get_async_activity_handle(task_token=token)
    try:
        await handle.complete({"status": "success", "output": output}, rpc_timeout=RPC_TIMEOUT)
    except RPCError as err:
        raise _error(err) from None


async def fail(client: Client, token: bytes, message: str) -> None:
    handle = client.get_async_activity_handle(task_token=token)
    error = ApplicationError(message or "Phase failed", type=PHASE_FAILED, non_retryable=True)
    try:
        await handle.fail(error, rpc_timeout=RPC_TIMEOUT)
    except RPCError as err:
        raise _error(err) from None
