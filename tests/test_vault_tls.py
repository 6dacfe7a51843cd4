"""mTLS through Vault, end to end, against real servers only.

OpenBao's dev server (a real Vault API) holds the certificates; it is set up by running the
documented set-up commands (docs/OPERATIONS.md). A TLS front door that requires a client
certificate stands before the Temporal dev server. worker.py and complete_activity.py run as
subprocesses configured by environment, as PM2 and the agents run them.
"""

from __future__ import annotations

import contextlib
import json
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
from temporalio.client import Client
from temporalio.service import TLSConfig

from activities.task_files import write_text_atomic
from config import load_client_settings
from harness.cli import run_cli
from harness.env import build_plan_input, cli_env, closed_address, start_plan
from harness.worker_process import WorkerProcess
from models import BuildPlanResult
from program_exit import EXIT_CONFIG, EXIT_CREDENTIALS, EXIT_UNREACHABLE
from temporal_connect import connect
from tests.helpers.checks import stderr_line, task_files_in, wait_for
from tests.servers.tls import (
    TlsRelay,
)
from tests.servers.vault import (
    CLIENT_CN,
    SERVER_DNS_NAME,
    SOME_TOKEN,
    Pki,
    VaultSetup,
    assert_no_secrets,
    vault_env,
    vault_worker_env,
)

# --- The documented set-up ---------------------------------------------------------------------


def test_readme_setup_grants_read_on_the_one_secret_only(vault: VaultSetup) -> None:
    assert (vault.secret_id_file.stat().st_mode & 0o777) == 0o600
    approle = hvac.Client(url=vault.bao.addr, token="", timeout=10)
    approle.auth.approle.login(role_id=vault.role_id, secret_id=vault.secret_id)
    try:
        data = approle.secrets.kv.v2.read_secret_version(
            path="temporal/worker", mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]
        assert set(data) == {"ca_cert_pem", "client_cert_pem", "client_key_pem"}
        with pytest.raises(hvac.exceptions.Forbidden):
            approle.secrets.kv.v2.create_or_update_secret(
                path="temporal/worker", secret={"x": "y"}, mount_point="secret"
            )
        with pytest.raises(hvac.exceptions.Forbidden):
            approle.secrets.kv.v2.read_secret_version(
                path="temporal/other", mount_point="secret", raise_on_deleted_version=True
            )
    finally:
        approle.auth.token.revoke_self()


# --- The happy path: worker, client and CLI all over mTLS with Vault's material ----------------


async def test_plan_completes_with_worker_and_cli_over_mtls(
    vault: VaultSetup,
    pki: Pki,
    relay: TlsRelay,
    named_relay: TlsRelay,
    tmp_path: Path,
) -> None:
    relay_seen, named_seen = len(relay.handshakes), len(named_relay.handshakes)
    tokens_before = set(vault.bao.issued_tokens())
    home = tmp_path / "home"
    env = vault_worker_env(vault_env(vault, relay.address, home), tmp_path)
    # The agent reaches Temporal by IP through a front door whose certificate names a DNS name.
    agent_env = vault_env(
        vault,
        named_relay.address,
        tmp_path / "agent-home",
        TEMPORAL_TLS_SERVER_NAME=SERVER_DNS_NAME,
    )
    queue = Path(env["AGENT_TASK_DIR"])
    cli_outputs: list[str] = []

    async with WorkerProcess(
        env,
        tmp_path / "logs",
        cwd=home,
        stop_signal=signal.SIGTERM,  # as systemd stops it
    ) as proc:
        # A client built by temporal_connect.connect(), the path the worker itself takes.
        client = await connect(load_client_settings(env))
        handle = await start_plan(client, env["TASK_QUEUE"], build_plan_input("mtls-plan"))
        await wait_for(lambda: bool(task_files_in(queue)), timeout=30)
        [task_file] = task_files_in(queue)
        code, out, err = await run_cli(
            ["--task-file", str(task_file), "success", "phase done over mTLS"],
            named_relay.address,
            env=agent_env,
        )
        cli_outputs += [out, err]
        assert (code, err) == (0, ""), err
        result = await handle.result()

    assert result == BuildPlanResult(status="complete", phases_run=1)
    cli_events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in cli_events] == [
        "vault_credentials_fetched",
        "tls_enabled",
        "activity_completed",
    ]

    # Who went through which door, with which certificate.
    worker_side = relay.handshakes[relay_seen:]
    cli_side = named_relay.handshakes[named_seen:]
    assert len(worker_side) >= 2  # the worker process and the test's client
    assert cli_side
    for h in worker_side + cli_side:
        assert h.accepted, h
        assert (h.peer_cn, h.alpn) == (CLIENT_CN, "h2")

    # The worker shut down cleanly, said it used TLS, and logged at DEBUG.
    assert proc.returncode == 0, proc.stderr
    events = [e["event"] for e in proc.events()]
    assert "tls_enabled" in events and "worker_stopped" in events
    [fetched] = proc.events("vault_credentials_fetched")
    # token_ttl=5m from the documented role; the token was given back at once.
    assert (fetched["lease_duration"], fetched["token_revoked"]) == (300, True)
    assert cli_events[0]["token_revoked"] is True
    assert '"level": "debug"' in Path(env["LOG_FILE"]).read_text()

    # Every Vault token handed out here was revoked by its holder right after the read.
    issued = set(vault.bao.issued_tokens()) - tokens_before
    assert len(issued) == 3  # worker, test client, CLI: one login each
    assert issued <= vault.bao.revoked_tokens()

    # Nothing secret in the CLI's output, nor anywhere on disk under the worker's HOME and cwd:
    # that takes in the worker's stdout, stderr and log file.
    on_disk = [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    assert len(on_disk) >= 4  # the task file, the log file, the run's stdout and stderr at least
    assert_no_secrets(cli_outputs + on_disk, vault, pki)


@dataclass
class Ran:
    """One run of complete_activity.py or worker.py to its exit."""

    code: int
    out: str
    err: str
    texts: list[str]  # all it wrote: stdout, stderr, and for the worker its LOG_FILE

    def line(self, code: int) -> str:
        """The one stderr line of a run that exits `code`, with no traceback anywhere."""
        line = stderr_line(self.err)
        assert self.code == code, (self.code, line)
        assert "Traceback" not in self.out
        return line


async def run_program(
    program: str, env: dict[str, str], tmp_path: Path, cwd: Path | None = None
) -> Ran:
    """`program` ("cli" or "worker") with an operator's `env`, against `env`'s Temporal address:
    the CLI with a made-up token, the worker with its own settings under `tmp_path` and its
    working directory `cwd` (by default `tmp_path`)."""
    if program == "cli":
        code, out, err = await run_cli([SOME_TOKEN, "success"], env["TEMPORAL_ADDRESS"], env=env)
        return Ran(code, out, err, [out, err])
    worker = WorkerProcess(vault_worker_env(env, tmp_path), tmp_path / "logs", cwd=cwd or tmp_path)
    code, out, err = await worker.run_to_exit()
    return Ran(code, out, err, worker.outputs())


# --- Refused clients: no certificate, a certificate from another CA, the wrong server name -----


async def test_tls_client_without_certificate_is_refused(pki: Pki, relay: TlsRelay) -> None:
    seen = len(relay.handshakes)
    with pytest.raises(RuntimeError, match="CertificateRequired"):
        await Client.connect(relay.address, tls=TLSConfig(server_root_ca_cert=pki.ca.cert_pem))
    # the client may retry the handshake; every attempt must be refused for the same reason
    attempts = relay.handshakes[seen:]
    assert attempts
    assert all(not h.accepted for h in attempts)
    assert {h.error for h in attempts} == {"PEER_DID_NOT_RETURN_A_CERTIFICATE"}


@pytest.mark.parametrize("program", ["cli", "worker"])
async def test_plaintext_client_is_refused(program: str, relay: TlsRelay, tmp_path: Path) -> None:
    """Without Vault settings a client speaks plaintext, sends no certificate, and is refused."""
    seen = len(relay.handshakes)
    env = cli_env(relay.address, HOME=str(tmp_path))
    line = (await run_program(program, env, tmp_path)).line(EXIT_UNREACHABLE)
    assert "without TLS" in line and "VAULT_ADDR" in line, line
    assert relay.handshakes[seen:] and not any(h.accepted for h in relay.handshakes[seen:])


@pytest.mark.parametrize("program", ["cli", "worker"])
async def test_client_certificate_from_another_ca_is_refused(
    program: str, vault: VaultSetup, pki: Pki, relay: TlsRelay, tmp_path: Path
) -> None:
    seen = len(relay.handshakes)
    env = vault_env(vault, relay.address, tmp_path / "home")
    foreign = {
        "ca_cert_pem": pki.ca.cert_pem.decode(),
        "client_cert_pem": pki.foreign_client.cert_pem.decode(),
        "client_key_pem": pki.foreign_client.key_pem.decode(),
    }
    with vault.bao.secret_replaced(foreign):
        ran = await run_program(program, env, tmp_path)
    line = ran.line(EXIT_UNREACHABLE)
    assert "TLS handshake" in line and "refused the client certificate" in line, line
    refused = relay.handshakes[seen:]
    assert refused and all(h.error == "CERTIFICATE_VERIFY_FAILED" for h in refused), refused
    assert_no_secrets(ran.texts, vault, pki)


async def test_untrusted_server_certificate_is_refused_by_the_cli(
    vault: VaultSetup, pki: Pki, relay: TlsRelay, tmp_path: Path
) -> None:
    env = vault_env(vault, relay.address, tmp_path)
    wrong_ca = {
        "ca_cert_pem": pki.other_ca.cert_pem.decode(),
        "client_cert_pem": pki.client.cert_pem.decode(),
        "client_key_pem": pki.client.key_pem.decode(),
    }
    with vault.bao.secret_replaced(wrong_ca):
        ran = await run_program("cli", env, tmp_path)
    line = ran.line(EXIT_UNREACHABLE)
    assert "TLS handshake" in line and "not trusted" in line and "ca_cert_pem" in line, line


async def test_server_name_override_is_what_lets_a_dns_certificate_through(
    vault: VaultSetup, named_relay: TlsRelay, tmp_path: Path
) -> None:
    """By IP without TEMPORAL_TLS_SERVER_NAME, a certificate for a DNS name does not match."""
    env = vault_env(vault, named_relay.address, tmp_path)
    line = (await run_program("cli", env, tmp_path)).line(EXIT_UNREACHABLE)
    assert "TLS handshake" in line and "TEMPORAL_TLS_SERVER_NAME" in line, line
    # With the override the handshake completes and the server itself judges the token.
    env["TEMPORAL_TLS_SERVER_NAME"] = SERVER_DNS_NAME
    seen = len(named_relay.handshakes)
    code, _, err = await run_cli([SOME_TOKEN, "success"], named_relay.address, env=env)
    # The server read the request and judged the made-up token: TLS was fine.
    assert code == 1, err
    assert stderr_line(err) == "complete_activity: invalid task token: the server cannot decode it"
    assert [h.accepted for h in named_relay.handshakes[seen:]] == [True]


# --- Credential failures: one line, the documented exit code, no traceback, nothing leaked -----


CASES = [
    "vault_down",
    "wrong_secret_id",
    "missing_field",
    "missing_path",
    "missing_secret_id_file",
    "group_readable_secret_id_file",
    "hvac_not_installed",
]


@pytest.mark.parametrize("program", ["cli", "worker"])
@pytest.mark.parametrize("case", CASES)
async def test_credential_failure_is_one_line(
    case: str, program: str, vault: VaultSetup, pki: Pki, relay: TlsRelay, tmp_path: Path
) -> None:
    seen = len(relay.handshakes)
    home = tmp_path / "home"
    env = vault_env(vault, relay.address, home)
    replaced: dict[str, str] | None = None
    delete_secret = False
    expect: str
    if case == "vault_down":
        env["VAULT_ADDR"] = f"http://{closed_address()}"
        expect = "Cannot reach Vault at"
    elif case == "wrong_secret_id":
        wrong = write_text_atomic(tmp_path / "wrong-secret-id", str(uuid.uuid4()))
        env["VAULT_SECRET_ID_FILE"] = str(wrong)
        expect = "refused the AppRole login: invalid role or secret ID"
    elif case == "missing_field":
        good = vault.bao.read_secret()
        replaced = {k: v for k, v in good.items() if k != "client_key_pem"}
        expect = "missing field 'client_key_pem'"
    elif case == "missing_path":
        delete_secret = True
        expect = "does not exist"
    elif case == "missing_secret_id_file":
        env["VAULT_SECRET_ID_FILE"] = str(tmp_path / "no-such-secret-id")
        expect = "VAULT_SECRET_ID_FILE="
    elif case == "group_readable_secret_id_file":
        loose = write_text_atomic(tmp_path / "loose-secret-id", vault.secret_id)
        loose.chmod(0o640)
        env["VAULT_SECRET_ID_FILE"] = str(loose)
        expect = "readable by group or others"
    else:
        # Shadow hvac with a package that fails to import, as an absent hvac does.
        shim = tmp_path / "no-hvac" / "hvac"
        shim.mkdir(parents=True)
        (shim / "__init__.py").write_text(
            "raise ModuleNotFoundError(\"No module named 'hvac'\", name='hvac')\n"
        )
        env["PYTHONPATH"] = str(shim.parent)
        expect = "hvac is not installed"

    with contextlib.ExitStack() as stack:
        if replaced is not None:
            stack.enter_context(vault.bao.secret_replaced(replaced))
        elif delete_secret:
            stack.enter_context(vault.bao.secret_deleted())
        ran = await run_program(program, env, tmp_path, cwd=home)

    line = ran.line(EXIT_CREDENTIALS if program == "cli" else EXIT_CONFIG)
    assert expect in line, line
    assert relay.handshakes[seen:] == []  # nothing was sent to Temporal
    assert_no_secrets(ran.texts, vault, pki)


@pytest.mark.parametrize("program", ["cli", "worker"])
async def test_require_tls_without_vault_fails_fast(
    program: str, relay: TlsRelay, tmp_path: Path
) -> None:
    seen = len(relay.handshakes)
    env = cli_env(
        relay.address,
        HOME=str(tmp_path),
        TEMPORAL_REQUIRE_TLS="1",
        VAULT_ADDR="http://127.0.0.1:8200",
    )
    ran = await run_program(program, env, tmp_path)
    line = ran.line(EXIT_CREDENTIALS if program == "cli" else EXIT_CONFIG)
    assert "TEMPORAL_REQUIRE_TLS is set" in line
    assert "missing: VAULT_ROLE_ID, VAULT_SECRET_ID_FILE" in line
    assert relay.handshakes[seen:] == []


async def test_operator_vault_token_is_never_sent_nor_revoked(
    vault: VaultSetup, relay: TlsRelay, tmp_path: Path
) -> None:
    """hvac reads VAULT_TOKEN by default; a failed login must not revoke an operator's token."""
    operator = vault.bao.admin().auth.token.create(policies=["default"], ttl="10m")
    operator_token = operator["auth"]["client_token"]
    home = tmp_path / "home"
    home.mkdir()
    write_text_atomic(home / ".vault-token", operator_token)
    wrong = write_text_atomic(tmp_path / "wrong-secret-id", str(uuid.uuid4()))
    env = vault_env(
        vault, relay.address, home, VAULT_TOKEN=operator_token, VAULT_SECRET_ID_FILE=str(wrong)
    )
    code, _, err = await run_cli([SOME_TOKEN, "success"], relay.address, env=env)
    assert code == EXIT_CREDENTIALS, err
    # still valid, and it never travelled with any request
    vault.bao.admin().auth.token.lookup(operator_token)
    requests = [e for e in vault.bao.audit_entries() if e.get("type") == "request"]
    assert not any(
        (e.get("request") or {}).get("client_token") == operator_token
        or (e.get("auth") or {}).get("client_token") == operator_token
        for e in requests
        if (e.get("request") or {}).get("path") != "auth/token/create"
    )
