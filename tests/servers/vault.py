"""A PKI and an OpenBao dev server set up for the worker's mTLS, and the environments that
use them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness.env import cli_env, make_config
from harness.worker_process import debug_env
from tests.helpers.secrets import scan_for_secrets
from tests.servers.tls import (
    CertificateAuthority,
    Issued,
    OpenBao,
    pem_body_lines,
)

CLIENT_CN = "temporal-build-worker"


SERVER_DNS_NAME = "temporal.build.test"


# Well-formed base64 but no task token: the CLI goes on to Vault and Temporal, and a server
# reached over TLS answers "cannot decode it" (the check docs/OPERATIONS.md suggests).
SOME_TOKEN = "AAAA"


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority
    other_ca: CertificateAuthority
    server: Issued  # for 127.0.0.1 and localhost
    named_server: Issued  # for SERVER_DNS_NAME only
    client: Issued
    foreign_client: Issued  # issued by other_ca


@dataclass(frozen=True)
class VaultSetup:
    bao: OpenBao
    role_id: str
    secret_id_file: Path
    secret_id: str = field(repr=False)  # kept out of failure reports


def vault_env(v: VaultSetup, address: str, home: Path, **extra: str) -> dict[str, str]:
    """What an operator puts in the environment (README): Vault, required TLS, an own HOME."""
    home.mkdir(parents=True, exist_ok=True)
    env = cli_env(
        address,
        VAULT_ADDR=v.bao.addr,
        VAULT_ROLE_ID=v.role_id,
        VAULT_SECRET_ID_FILE=str(v.secret_id_file),
        TEMPORAL_REQUIRE_TLS="1",
        HOME=str(home),
        TMPDIR=str(home),
    )
    env.update(extra)
    return env


def vault_worker_env(env: dict[str, str], tmp: Path) -> dict[str, str]:
    """The worker's own settings on top of an operator's `env`: a queue and directories under
    `tmp`, DEBUG logs in `tmp`/logs."""
    return debug_env(make_config(tmp, env["TEMPORAL_ADDRESS"]), tmp / "logs", env)


def secrets_to_hide(v: VaultSetup, pki: Pki) -> list[str]:
    """Everything that must never appear in a log: PEM text, secret id, every Vault token."""
    needles = ["-----BEGIN", "PRIVATE KEY", v.secret_id, v.bao.root_token]
    needles += v.bao.issued_tokens()
    for pem in (
        pki.ca.cert_pem,
        pki.client.cert_pem,
        pki.client.key_pem,
        pki.foreign_client.cert_pem,
        pki.foreign_client.key_pem,
        pki.other_ca.cert_pem,
    ):
        needles += pem_body_lines(pem)
    return needles


def assert_no_secrets(texts: Iterable[str], v: VaultSetup, pki: Pki) -> None:
    needles = secrets_to_hide(v, pki)
    assert len(needles) > 10
    scan = scan_for_secrets(texts, [], needles)
    assert scan.hits == [], scan.hits[:5]
