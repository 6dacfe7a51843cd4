"""Connecting to Temporal: the client the worker and the agent runner use, and what a failed
connect means, in one line an operator can act on.

The worker, the agent runner and complete_activity.py all report a failed `Client.connect`
through `describe_connect_error`, so they name the same cause in the same words. Importing this
module costs the standard library only: complete_activity.py imports it for that one function.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from typing import TYPE_CHECKING, Any

from exceptions import TemporalUnreachableError

if TYPE_CHECKING:
    from temporalio.client import Client

    from config import ClientSettings

_ALERT = re.compile(r"received fatal alert: (\w+)")
_BAD_SERVER_CERT = re.compile(r"InvalidCertificate\((\w+)")


def worker_identity() -> str:
    """The identity the worker's client and pollers show Temporal: program, host and process."""
    return f"temporal-build-worker@{socket.gethostname()}:{os.getpid()}"


async def connect(settings: ClientSettings, **options: Any) -> Client:
    """Connect with the pydantic converter and, when configured, mTLS from Vault.

    The Vault round trips are blocking HTTP, so they run in a thread. A failed connect is
    re-raised as `TemporalUnreachableError` with one line that says whether TLS was the cause.
    `options` go to `Client.connect`; the identity defaults to `worker_identity()`.
    """
    # Imported on first use, so that complete_activity.py, which needs only
    # describe_connect_error, never pays for the converter, structlog or the Vault client.
    import structlog
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    import vault

    log = structlog.get_logger("temporal_connect")
    tls = await asyncio.to_thread(vault.tls_config, settings, log.info)
    if tls is not None:
        log.info(
            "tls_enabled",
            vault_addr=settings.vault_addr,
            server_name=settings.tls_server_name,
        )
    else:
        log.warning(
            "tls_disabled",
            reason="no_vault_config",
            missing=vault.missing_vault_settings(settings),
        )
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            tls=tls or False,
            data_converter=pydantic_data_converter,
            identity=options.pop("identity", worker_identity()),
            **options,
        )
    except RuntimeError as err:
        raise TemporalUnreachableError(
            describe_connect_error(settings.temporal_address, err, tls is not None)
        ) from None


def describe_connect_error(address: str, err: BaseException, tls: bool) -> str:
    """One line for a failed Client.connect, naming TLS when TLS is the likely cause.

    The SDK's message is a nested Rust error dump; an operator needs to know whether the
    server refused our certificate, we refused the server's, or nothing answered.
    """
    text = " ".join(str(err).split()) or type(err).__name__
    alert = _ALERT.search(text)
    bad_server = _BAD_SERVER_CERT.search(text)
    if alert:
        return (
            f"TLS handshake with Temporal at {address} failed: the server refused the client "
            f"certificate (TLS alert {alert.group(1)}); check client_cert_pem in Vault"
        )
    if bad_server:
        hint = (
            "set TEMPORAL_TLS_SERVER_NAME to the name in its certificate"
            if bad_server.group(1) in ("NotValidForName", "NotValidForNameContext")
            else "check ca_cert_pem in Vault"
        )
        return (
            f"TLS handshake with Temporal at {address} failed: the server's certificate is "
            f"not trusted ({bad_server.group(1)}); {hint}"
        )
    if "tcp connect error" in text or "Connection refused" in text:
        over = " over TLS" if tls else ""
        return f"cannot reach Temporal at {address}{over}: connection refused"
    if tls and "after connection" in text:
        return (
            f"TLS handshake with Temporal at {address} failed: the server closed the connection "
            "(it may have refused the client certificate); check client_cert_pem in Vault"
        )
    if tls and ("tls" in text.lower() or "handshake" in text.lower()):
        return f"TLS handshake with Temporal at {address} failed: {_short(text)}"
    if not tls and ("after connection" in text or "transport error" in text):
        return (
            f"cannot reach Temporal at {address} without TLS: the server closed the connection; "
            "if it requires mTLS, configure VAULT_ADDR, VAULT_ROLE_ID and VAULT_SECRET_ID_FILE"
        )
    over = " over TLS" if tls else ""
    return f"cannot reach Temporal at {address}{over}: {_short(text)}"


def _short(text: str) -> str:
    inner = re.findall(r'error: "([^"]+)"', text)
    return (inner[-1] if inner else text)[:300]
