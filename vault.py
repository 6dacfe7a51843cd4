"""mTLS material from Vault (AppRole login, KV v2 read), and the TLS config built from it.

The worker and complete_activity.py both call `tls_config()`, so they speak TLS in the same
cases and fail in the same words. Certificates and keys stay in memory: they are handed to the
Temporal client as bytes and never logged or written to disk. hvac is imported only when Vault
is configured.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from config import ClientSettings
from exceptions import CredentialError

if TYPE_CHECKING:
    from temporalio.service import TLSConfig

VAULT_PATH = "secret/data/temporal/worker"
KV_MOUNT = "secret"
KV_PATH = "temporal/worker"
FIELDS = ("ca_cert_pem", "client_cert_pem", "client_key_pem")
HTTP_TIMEOUT_SECONDS = 10
REQUIRE_TLS_MESSAGE = (
    "TEMPORAL_REQUIRE_TLS is set but no Vault credentials configured. "
    "Set VAULT_ADDR, VAULT_ROLE_ID, and VAULT_SECRET_ID_FILE."
)


@dataclass(frozen=True)
class TemporalCredentials:
    ca_cert_pem: bytes
    client_cert_pem: bytes
    client_key_pem: bytes

    def __repr__(self) -> str:  # never print key material, even by accident
        return "TemporalCredentials(<redacted>)"


def read_secret_id(path: Path) -> str:
    """Read the AppRole secret id; refuse a file that others can read."""
    try:
        st = path.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CredentialError(
                f"VAULT_SECRET_ID_FILE={str(path)!r} is readable by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
            )
        secret_id = path.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise CredentialError(
            f"Cannot read VAULT_SECRET_ID_FILE={str(path)!r}: {err.strerror or err}"
        ) from None
    if not secret_id:
        raise CredentialError(f"VAULT_SECRET_ID_FILE={str(path)!r} is empty")
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
    client = hvac.Client(url=vault_addr, timeout=HTTP_TIMEOUT_SECONDS)
    try:
        try:
            client.auth.approle.login(role_id=role_id, secret_id=secret_id, use_token=True)
        except hvac.exceptions.VaultError as err:
            raise CredentialError(
                f"Vault at {vault_addr!r} refused the AppRole login: {_vault_reason(err)}"
            ) from None
        del secret_id
        try:
            response = client.secrets.kv.v2.read_secret_version(
                path=KV_PATH, mount_point=KV_MOUNT, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            raise CredentialError(f"Vault path {VAULT_PATH!r} does not exist") from None
        except hvac.exceptions.Forbidden:
            raise CredentialError(
                f"Vault denied reading {VAULT_PATH!r}: the AppRole's policy needs read on it"
            ) from None
        except hvac.exceptions.VaultError as err:
            raise CredentialError(
                f"Vault error reading {VAULT_PATH!r}: {_vault_reason(err)}"
            ) from None
        raw = (response or {}).get("data", {}).get("data")
        if not isinstance(raw, dict):
            raise CredentialError(
                f"Vault path {VAULT_PATH!r}: expected a dict, got {type(raw).__name__}"
            )
        values = {}
        for name in FIELDS:
            value = raw.get(name)
            if not value:
                raise CredentialError(f"Vault path {VAULT_PATH!r}: missing field {name!r}")
            values[name] = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return TemporalCredentials(**values)
    except requests.exceptions.RequestException as err:
        raise CredentialError(
            f"Failed to connect to Vault at {vault_addr!r}: {type(err).__name__}"
        ) from None
    finally:
        _revoke(client)


def _vault_reason(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _revoke(client: object) -> None:
    """Best effort: a token left behind expires by its TTL anyway."""
    try:
        if getattr(client, "token", None):
            client.auth.token.revoke_self()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001, S110 - revocation failing must not hide the real result
        pass


def tls_config(settings: ClientSettings) -> TLSConfig | bool:
    """TLSConfig from Vault when configured; plaintext otherwise unless TLS is required."""
    if not settings.vault_configured:
        if settings.require_tls:
            raise CredentialError(REQUIRE_TLS_MESSAGE)
        return False
    from temporalio.service import TLSConfig

    assert settings.vault_addr and settings.vault_role_id and settings.vault_secret_id_file
    creds = fetch_temporal_credentials(
        settings.vault_addr, settings.vault_role_id, settings.vault_secret_id_file
    )
    return TLSConfig(
        server_root_ca_cert=creds.ca_cert_pem,
        client_cert=creds.client_cert_pem,
        client_private_key=creds.client_key_pem,
        domain=settings.tls_server_name,
    )
