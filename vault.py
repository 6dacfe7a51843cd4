"""mTLS material from Vault (AppRole login, KV v2 read), and the TLS config built from it.

The worker and complete_activity.py both call `tls_config()`, so they speak TLS in the same
cases and fail in the same words. Certificates and keys stay in memory: they are handed to the
Temporal client as bytes and never logged or written to disk. hvac is imported only when Vault
is configured. Every failure is a `CredentialError` carrying one line an operator can act on;
no message ever contains the secret id, the Vault token, or PEM text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config import ClientSettings
from exceptions import CredentialError
from secret_files import open_secret_file, read_error

if TYPE_CHECKING:
    from temporalio.service import TLSConfig

VAULT_PATH = "secret/data/temporal/worker"
KV_MOUNT = "secret"
KV_PATH = "temporal/worker"
FIELDS = ("ca_cert_pem", "client_cert_pem", "client_key_pem")
HTTP_TIMEOUT_SECONDS = 10
MAX_SECRET_ID_BYTES = 4096
REQUIRE_TLS_MESSAGE = (
    "TEMPORAL_REQUIRE_TLS is set but no Vault credentials configured{missing}. "
    "Set VAULT_ADDR, VAULT_ROLE_ID, and VAULT_SECRET_ID_FILE."
)
_CERT_MARK = "-----BEGIN CERTIFICATE-----"
_KEY_MARK = re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")


@dataclass(frozen=True)
class TemporalCredentials:
    """The three PEM values, as bytes, exactly as stored in Vault."""

    ca_cert_pem: bytes
    client_cert_pem: bytes
    client_key_pem: bytes
    lease_duration: int = 0  # of the Vault token, as granted at login
    token_revoked: bool = False

    def __repr__(self) -> str:  # never print key material, even by accident
        return "TemporalCredentials(<redacted>)"


def read_secret_id(path: Path) -> str:
    """Read the AppRole secret id; refuse a file that group or others could read
    (secret_files.open_secret_file)."""
    name = "VAULT_SECRET_ID_FILE"
    fd = open_secret_file(path, name, CredentialError)
    try:
        raw = os.read(fd, MAX_SECRET_ID_BYTES + 1)
    except OSError as err:
        raise CredentialError(read_error(path, name, err)) from None
    finally:
        os.close(fd)
    if len(raw) > MAX_SECRET_ID_BYTES:
        raise CredentialError(f"{name}={str(path)!r} is too large for a secret id")
    try:
        secret_id = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CredentialError(f"{name}={str(path)!r} is not text") from None
    if not secret_id:
        raise CredentialError(f"{name}={str(path)!r} is empty")
    return secret_id


def fetch_temporal_credentials(
    vault_addr: str, role_id: str, secret_id_file: Path
) -> TemporalCredentials:
    """AppRole login, one KV v2 read, then revoke the token: it is not needed again."""
    secret_id = read_secret_id(secret_id_file)
    try:
        import hvac
        import hvac.exceptions
        import requests.exceptions
    except ImportError:
        raise CredentialError(
            "VAULT_ADDR is set but hvac is not installed. Install with: pip install hvac"
        ) from None
    # token="" on purpose: hvac would otherwise pick up VAULT_TOKEN or ~/.vault-token, send it
    # with the login, and the clean-up below would revoke an operator's own token.
    client = hvac.Client(url=vault_addr, token="", timeout=HTTP_TIMEOUT_SECONDS)
    token = ""
    revoked = False
    try:
        try:
            response = client.auth.approle.login(
                role_id=role_id, secret_id=secret_id, use_token=True
            )
        except hvac.exceptions.VaultError as err:
            raise CredentialError(
                f"Vault at {vault_addr!r} refused the AppRole login: {_vault_reason(err)}"
            ) from None
        finally:
            del secret_id
        auth = (response or {}).get("auth") or {}
        token = str(auth.get("client_token") or "")
        lease = int(auth.get("lease_duration") or 0)
        try:
            response = client.secrets.kv.v2.read_secret_version(
                path=KV_PATH, mount_point=KV_MOUNT, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            raise CredentialError(
                f"Vault path {VAULT_PATH!r} does not exist (or its latest version is deleted)"
            ) from None
        except hvac.exceptions.Forbidden:
            raise CredentialError(
                f"Vault denied reading {VAULT_PATH!r}: the AppRole's policy needs read on it"
            ) from None
        except hvac.exceptions.VaultError as err:
            raise CredentialError(
                f"Vault error reading {VAULT_PATH!r}: {_vault_reason(err)}"
            ) from None
        creds = _credentials((response or {}).get("data", {}).get("data"))
    except requests.exceptions.RequestException as err:
        raise CredentialError(
            f"Cannot reach Vault at {vault_addr!r}: {_request_reason(err)}"
        ) from None
    finally:
        if token:
            revoked = _revoke(client)
    return replace(creds, lease_duration=lease, token_revoked=revoked)


def _credentials(raw: Any) -> TemporalCredentials:
    """Check the secret's shape without ever echoing a value."""
    if not isinstance(raw, dict):
        raise CredentialError(
            f"Vault path {VAULT_PATH!r}: expected a dict, got {type(raw).__name__}"
        )
    values: dict[str, bytes] = {}
    for name in FIELDS:
        value = raw.get(name)
        if value is None or value == "":
            raise CredentialError(f"Vault path {VAULT_PATH!r}: missing field {name!r}")
        if not isinstance(value, str):
            raise CredentialError(
                f"Vault path {VAULT_PATH!r}: field {name!r} must be PEM text, "
                f"got {type(value).__name__}"
            )
        is_key = name == "client_key_pem"
        if not (_KEY_MARK.search(value) if is_key else _CERT_MARK in value):
            what = "a PEM private key" if is_key else "a PEM certificate"
            raise CredentialError(f"Vault path {VAULT_PATH!r}: field {name!r} is not {what}")
        values[name] = value.encode("utf-8")
    return TemporalCredentials(
        ca_cert_pem=values["ca_cert_pem"],
        client_cert_pem=values["client_cert_pem"],
        client_key_pem=values["client_key_pem"],
    )


def _vault_reason(err: Exception) -> str:
    """hvac's message without the request URL it appends (`..., on post http://...`)."""
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    first = re.sub(r", on \w+ https?://\S+$", "", first)
    return first[:200] or type(err).__name__


def _request_reason(err: Exception) -> str:
    """'connection refused', 'timed out after 10 s', ... instead of a urllib3 repr."""
    import requests.exceptions

    if isinstance(err, requests.exceptions.Timeout):
        return f"timed out after {HTTP_TIMEOUT_SECONDS} s"
    if isinstance(err, requests.exceptions.SSLError):
        return "TLS to Vault failed (is VAULT_CACERT set to the CA of Vault's certificate?)"
    text = str(err)
    for pattern, reason in (
        (r"Connection refused", "connection refused"),
        (
            r"Name or service not known|nodename nor servname|Temporary failure in name",
            "host name not found",
        ),
        (r"No route to host", "no route to host"),
        (r"Connection reset", "connection reset"),
    ):
        if re.search(pattern, text):
            return reason
    if isinstance(err, (requests.exceptions.MissingSchema, requests.exceptions.InvalidURL)):
        return "VAULT_ADDR is not a valid http(s) URL"
    return type(err).__name__


def _revoke(client: Any) -> bool:
    """Best effort: a token left behind expires by its TTL anyway."""
    try:
        client.auth.token.revoke_self()
        revoked = True
    except Exception:  # noqa: BLE001 - revocation failing must not hide the real result
        revoked = False
    client.token = ""
    return revoked


def tls_config(
    settings: ClientSettings, log: Callable[..., object] | None = None
) -> TLSConfig | None:
    """TLSConfig from Vault when configured; None (plaintext) otherwise, unless TLS is required.

    Blocking (HTTP to Vault): call it before the event loop matters, or in a thread. `log`
    receives `vault_credentials_fetched` (the original's event) with metadata only.
    """
    if not settings.vault_configured:
        if settings.require_tls:
            missing = missing_vault_settings(settings)
            raise CredentialError(
                REQUIRE_TLS_MESSAGE.format(missing=f" (missing: {', '.join(missing)})")
            )
        return None
    from temporalio.service import TLSConfig

    assert settings.vault_addr and settings.vault_role_id and settings.vault_secret_id_file
    creds = fetch_temporal_credentials(
        settings.vault_addr, settings.vault_role_id, settings.vault_secret_id_file
    )
    if log is not None:
        log(
            "vault_credentials_fetched",
            vault_addr=settings.vault_addr,
            path=VAULT_PATH,
            lease_duration=creds.lease_duration,
            token_revoked=creds.token_revoked,
        )
    return TLSConfig(
        server_root_ca_cert=creds.ca_cert_pem,
        client_cert=creds.client_cert_pem,
        client_private_key=creds.client_key_pem,
        domain=settings.tls_server_name,
    )


def missing_vault_settings(settings: ClientSettings) -> list[str]:
    """Which of the three Vault variables are unset (for messages and the tls_disabled log)."""
    values = {
        "VAULT_ADDR": settings.vault_addr,
        "VAULT_ROLE_ID": settings.vault_role_id,
        "VAULT_SECRET_ID_FILE": settings.vault_secret_id_file,
    }
    return [name for name, value in values.items() if not value]
