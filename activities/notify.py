"""Operator notifications: `send-matrix.sh <room> <message>` by default, or the Matrix
client-server API when MATRIX_HOMESERVER and MATRIX_ACCESS_TOKEN_FILE are set.

Best effort by contract: a failure is a warning in the log, never an activity failure. Text is
plain and sanitised by the caller; `key` identifies one message (workflow run + block) so a
transport that supports it can drop duplicates when an activity is retried. The API transport
does: the key becomes the transaction id, and a homeserver answers a repeated
`PUT .../send/m.room.message/{txnId}` from the same access token with the first event. That
covers what `notify_once`'s marker files cannot: a message that was posted but whose answer was
lost (worker killed or shut down mid-request), or a retry on a host without the markers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from config import WorkerConfig

SEND_TIMEOUT_SECONDS = 15
PM2_IPC_VARS = ("NODE_CHANNEL_FD", "NODE_CHANNEL_SERIALIZATION_MODE", "NODE_UNIQUE_ID")

# Matrix API transport.
REQUEST_TIMEOUT_SECONDS = 5.0  # one HTTP request; the whole send stays within SEND_TIMEOUT_SECONDS
MAX_ATTEMPTS = 3  # transport errors, 429 and 5xx are retried with the same transaction id
MAX_BODY_CHARS = 8000  # x 4 bytes of UTF-8 (or 6 as a JSON escape) stays under the 64 KiB event cap
TRUNCATED = "\n[… truncated]"
ZWJ = "\u200d"  # after every "@": "@room" and "@user:server" no longer match as mentions
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0/C1 controls except \t and \n
CLIENT_API = "/_matrix/client/v3"

log = structlog.get_logger("notify")
# httpx logs every request at INFO; one notification is one `matrix_sent` line, not two.
logging.getLogger("httpx").setLevel(logging.WARNING)

# MATRIX_ROOM resolved to a room id, per (homeserver, MATRIX_ROOM), once per process.
_room_ids: dict[tuple[str, str], str] = {}
# Loading CA certificates takes 20-30 ms of blocking work: done once, in a thread.
_tls_context: ssl.SSLContext | None = None


class MatrixSendError(Exception):
    """One readable reason a notification did not reach the room (never carries the token)."""


def clean_env() -> dict[str, str]:
    """The environment minus PM2's IPC variables, which make Node children abort."""
    return {k: v for k, v in os.environ.items() if k not in PM2_IPC_VARS}


async def send_matrix_script(config: WorkerConfig, message: str) -> bool:
    """Run send-matrix.sh without blocking the event loop; True when it exited 0."""
    try:
        proc = await asyncio.create_subprocess_exec(
            str(config.send_matrix_script),
            config.matrix_room,
            message,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=clean_env(),
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
        log.warning(
            "matrix_send_failed",
            returncode=proc.returncode,
            stderr=stderr.decode("utf-8", "replace").strip()[:500],
        )
        return False
    return True


# --- Matrix client-server API -----------------------------------------------------------------


def plain_body(message: str) -> str:
    """The text as it may appear in a room: no mention triggers, no control characters, capped."""
    text = _CONTROL.sub("", message).replace("@", "@" + ZWJ)
    if len(text) > MAX_BODY_CHARS:
        text = text[: MAX_BODY_CHARS - len(TRUNCATED)] + TRUNCATED
    return text


def txn_id(key: str) -> str:
    """The transaction id for `key`: a retried activity sends the same key, hence the same id."""
    return "tbw-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:48]


def room_reference(room: str, server_name: str | None) -> str:
    """`!id:server` and `#alias:server` as given; `#name` or a bare `name` on our own server."""
    if room.startswith("!") or (room.startswith("#") and ":" in room):
        return room
    if server_name is None:
        raise MatrixSendError(f"MATRIX_ROOM {room!r} needs the homeserver's server name")
    return f"#{room.removeprefix('#')}:{server_name}"


def _path(*parts: str) -> str:
    return CLIENT_API + "".join("/" + quote(p, safe="") for p in parts)


async def _request(
    client: httpx.AsyncClient, method: str, url: str, **kwargs: Any
) -> dict[str, Any]:
    """One API call, retried on transport errors, 429 and 5xx: its JSON, or MatrixSendError."""
    reason = "no attempt made"
    for attempt in range(1, MAX_ATTEMPTS + 1):
        delay = float(attempt)
        try:
            response = await client.request(method, url, **kwargs)
        except httpx.TimeoutException:
            reason = "request timed out"
        except httpx.TransportError as err:
            reason = f"{type(err).__name__}: {err}"
        else:
            try:
                answer = response.json()
            except ValueError:
                answer = {}
            if not isinstance(answer, dict):
                answer = {}
            if response.is_success:
                return answer
            errcode = answer.get("errcode", "")
            reason = f"HTTP {response.status_code} {errcode} {answer.get('error', '')}".strip()
            if response.status_code == 429:
                retry_ms = answer.get("retry_after_ms")
                delay = retry_ms / 1000 if isinstance(retry_ms, int | float) else delay
            elif response.status_code < 500:
                raise MatrixSendError(reason[:300])
        if attempt < MAX_ATTEMPTS:
            await asyncio.sleep(min(delay, 5.0))
    raise MatrixSendError(reason[:300])


async def resolve_room(client: httpx.AsyncClient, homeserver: str, room: str) -> str:
    """MATRIX_ROOM as a room id, looked up once per process (aliases rarely move)."""
    cached = _room_ids.get((homeserver, room))
    if cached is not None:
        return cached
    server_name = None
    if not room.startswith(("!", "#")) or (room.startswith("#") and ":" not in room):
        whoami = await _request(client, "GET", _path("account", "whoami"))
        user_id = str(whoami.get("user_id", ""))
        if ":" not in user_id:
            raise MatrixSendError("whoami answered without a user id")
        server_name = user_id.split(":", 1)[1]
    reference = room_reference(room, server_name)
    if reference.startswith("!"):
        room_id = reference
    else:
        try:
            answer = await _request(client, "GET", _path("directory", "room", reference))
        except MatrixSendError as err:
            raise MatrixSendError(f"room alias {reference} not resolved: {err}") from None
        room_id = str(answer.get("room_id", ""))
        if not room_id.startswith("!"):
            raise MatrixSendError(f"room alias {reference} resolved to no room id")
    _room_ids[(homeserver, room)] = room_id
    return room_id


async def tls_context() -> ssl.SSLContext:
    """httpx's default verification (certifi, or SSL_CERT_FILE / SSL_CERT_DIR), built once."""
    global _tls_context
    if _tls_context is None:
        _tls_context = await asyncio.to_thread(httpx.create_ssl_context)
    return _tls_context


async def send_matrix_api(
    config: WorkerConfig,
    message: str,
    *,
    key: str,
    timeout: float = SEND_TIMEOUT_SECONDS,
    request_timeout: float = REQUEST_TIMEOUT_SECONDS,
) -> bool:
    """Post one `m.notice` through the client-server API; True when the homeserver took it."""
    homeserver, token_file = config.matrix_homeserver, config.matrix_access_token_file
    assert homeserver is not None and token_file is not None
    started = time.monotonic()
    try:
        token = (await asyncio.to_thread(Path(token_file).read_text, encoding="utf-8")).strip()
        if not token:
            raise MatrixSendError("the access token file is empty")
        if not (token.isascii() and token.isprintable()) or " " in token:
            # checked here so that no HTTP library error can quote it back into the log
            raise MatrixSendError("the access token file holds more than one printable word")
        verify = await tls_context()
        async with (
            asyncio.timeout(timeout),
            httpx.AsyncClient(
                base_url=homeserver,
                headers={"Authorization": f"Bearer {token}"},
                timeout=request_timeout,
                verify=verify,
                follow_redirects=False,
            ) as client,
        ):
            room_id = await resolve_room(client, homeserver, config.matrix_room)
            content = {"msgtype": "m.notice", "body": plain_body(message), "m.mentions": {}}
            answer = await _request(
                client,
                "PUT",
                _path("rooms", room_id, "send", "m.room.message", txn_id(key)),
                json=content,
            )
    except TimeoutError:
        log.warning(
            "matrix_send_failed",
            transport="api",
            room=config.matrix_room,
            error=f"timed out after {timeout}s",
        )
        return False
    except MatrixSendError as err:
        log.warning("matrix_send_failed", transport="api", room=config.matrix_room, error=str(err))
        return False
    except OSError as err:
        log.warning(
            "matrix_send_failed",
            transport="api",
            room=config.matrix_room,
            error=f"access token file: {err.strerror or type(err).__name__}",
        )
        return False
    log.info(
        "matrix_sent",
        room_id=room_id,
        event_id=answer.get("event_id"),
        seconds=round(time.monotonic() - started, 3),
    )
    return True


def uses_matrix_api(config: WorkerConfig) -> bool:
    return bool(config.matrix_homeserver and config.matrix_access_token_file)


async def notify(config: WorkerConfig, message: str, *, key: str) -> bool:
    """Send one operator notification; never raises."""
    try:
        if uses_matrix_api(config):
            return await send_matrix_api(config, message, key=key)
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
