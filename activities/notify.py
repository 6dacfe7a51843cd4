"""Operator notifications: `send-matrix.sh <room> <message>` by default (spec 5).

Best effort by contract: a failure is a warning in the log, never an activity failure. Text is
plain and sanitised by the caller; `key` identifies one message (workflow run + block) so a
transport that supports it can drop duplicates when an activity is retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import structlog

from config import WorkerConfig

SEND_TIMEOUT_SECONDS = 15
PM2_IPC_VARS = ("NODE_CHANNEL_FD", "NODE_CHANNEL_SERIALIZATION_MODE", "NODE_UNIQUE_ID")

log = structlog.get_logger("notify")


def clean_env() -> dict[str, str]:
    """The environment minus PM2's IPC variables, which make Node children abort (TBLD-5)."""
    return {k: v for k, v in os.environ.items() if k not in PM2_IPC_VARS}


async def send_matrix_script(config: WorkerConfig, message: str) -> bool:
    """Run send-matrix.sh without blocking the event loop; True when it exited 0."""
    try:
        proc = await asyncio.create_subprocess_exec(
            str(config.send_matrix_script), config.matrix_room, message,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=clean_env(),
        )
    except OSError as err:
        log.warning("matrix_send_failed", error=f"{type(err).__name__}: {err.strerror or err}")
        return False
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), SEND_TIMEOUT_SECONDS)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log.warning("matrix_send_failed", error=f"timed out after {SEND_TIMEOUT_SECONDS}s")
        return False
    if proc.returncode != 0:
        log.warning("matrix_send_failed", returncode=proc.returncode,
                    stderr=stderr.decode("utf-8", "replace").strip()[:500])
        return False
    return True


async def notify(config: WorkerConfig, message: str, *, key: str) -> bool:
    """Send one operator notification; never raises."""
    try:
        return await send_matrix_script(config, message)
    except Exception as err:  # noqa: BLE001 - best effort by contract
        log.warning("matrix_send_failed", error=f"{type(err).__name__}: {err}")
        return False


def _sent_marker(config: WorkerConfig, key: str) -> Path:
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return config.agent_task_dir / ".worker-state" / "notified" / digest


async def notify_once(config: WorkerConfig, message: str, *, key: str) -> bool:
    """`notify`, at most once per `key`: a retried activity does not repeat what was sent.

    A marker file records each key that was delivered; a failed send leaves none, so a retry
    tries again.
    """
    marker = _sent_marker(config, key)
    if await asyncio.to_thread(marker.exists):
        log.info("notification_already_sent")
        return True
    sent = await notify(config, message, key=key)
    if sent:
        def record() -> None:
            marker.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            marker.touch()

        try:
            await asyncio.to_thread(record)
        except OSError as err:
            log.warning("notification_marker_failed", error=err.strerror or str(err))
    return sent
