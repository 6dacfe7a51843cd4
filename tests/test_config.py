"""Configuration from the environment: every variable, its default, and every refusal.

The unit tests call `load_config(env)` with an explicit mapping; the entry-point tests run
`worker.py` as PM2 would, to prove a bad setting ends in one line and a documented exit code.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config import (
    WorkerConfig,
    load_client_settings,
    load_config,
    parse_agent_hosts,
    parse_worker_host,
)
from exceptions import ConfigError
from harness.env import ROOT, closed_address
from harness.worker_process import FOREIGN_VARS, bare_env, worker_command
from tests.helpers.checks import stderr_line
from tests.helpers.docs import first_column_names

pytestmark = pytest.mark.unit

HOME = "/home/agent"

# Every variable the worker or complete_activity.py reads, with the
# WorkerConfig field it sets and that field's default when the variable is unset;
# besides HOME (field `home`), the root of the default paths.
DEFAULTS: dict[str, tuple[str, Any]] = {
    "TEMPORAL_ADDRESS": ("temporal_address", "localhost:7233"),
    "TEMPORAL_NAMESPACE": ("temporal_namespace", "default"),
    "TASK_QUEUE": ("task_queue", "helm-build"),
    "MATRIX_ROOM": ("matrix_room", "sysadmin"),
    "SEND_MATRIX_SCRIPT": ("send_matrix_script", Path(HOME, "scripts/send-matrix.sh")),
    "TEMPORAL_AUDIT_DIR": ("audit_dir", Path(HOME, ".claude/comms/artifacts")),
    "LOG_LEVEL": ("log_level", "INFO"),
    "LOG_FORMAT": ("log_format", None),
    "LOG_FILE": ("log_file", None),
    "VAULT_ADDR": ("vault_addr", None),
    "VAULT_ROLE_ID": ("vault_role_id", None),
    "VAULT_SECRET_ID_FILE": ("vault_secret_id_file", None),
    "TEMPORAL_REQUIRE_TLS": ("require_tls", False),
    "TEMPORAL_TLS_SERVER_NAME": ("tls_server_name", None),
    "BLOCK_POLL_SECONDS": ("block_poll_seconds", 300.0),
    "AGENT_TASK_DIR": ("agent_task_dir", Path(HOME, ".claude/task-queue")),
    "TEMPORAL_SUMMARY_DIR": (
        "summary_dir",
        Path(HOME, "repos/personal/agent-activity/workflows"),
    ),
    "MATRIX_HOMESERVER": ("matrix_homeserver", None),
    "MATRIX_ACCESS_TOKEN_FILE": ("matrix_access_token_file", None),
    "AGENT_HEARTBEAT_TIMEOUT": ("heartbeat_timeout_seconds", 0),
    "WORKER_HOST": ("worker_host", socket.gethostname()),
    "AGENT_HOSTS": ("agent_hosts", {}),
    "HOST_WAIT_SECONDS": ("host_wait_seconds", 900.0),
    "FAILURE_HOLD": ("failure_hold_seconds", 0.0),
    "MAX_AUDIT_ROUNDS": ("max_audit_rounds", 3),
    "VERIFY_FIXES": ("verify_fixes", False),
    "DECISION_REMINDERS": ("decision_reminders", []),
    "PIPELINE_BUDGET_USD": ("budget_usd", None),
}


def private_file(path: Path, text: str = "s3cr3t-id\n", mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_defaults_when_unset() -> None:
    # a field added to WorkerConfig without a row here fails this test
    fields = {field for field, _ in DEFAULTS.values()}
    assert fields | {"home"} == set(WorkerConfig.model_fields)
    config = load_config({"HOME": HOME})
    for name, (field, default) in DEFAULTS.items():
        assert getattr(config, field) == default, name
    assert config.home == Path(HOME)
    assert config.vault_configured is False
    assert load_config({}).home == Path.home()


def test_empty_or_blank_value_means_default() -> None:
    """The original let `TASK_QUEUE=` override the default with an empty string."""
    for blank in ("", "   "):
        env = dict.fromkeys([*DEFAULTS, "HOME"], blank)
        assert load_config(env) == load_config({})


def test_every_variable_is_read(tmp_path: Path) -> None:
    secret = private_file(tmp_path / "secret-id")
    token = private_file(tmp_path / "matrix-token", "syt_abc")
    env = {
        "HOME": HOME,
        "TEMPORAL_ADDRESS": "temporal.internal:7234",
        "TEMPORAL_NAMESPACE": "builds",
        "TASK_QUEUE": "other-queue",
        "MATRIX_ROOM": "ops",
        "SEND_MATRIX_SCRIPT": "/opt/bin/send.sh",
        "TEMPORAL_AUDIT_DIR": "/srv/audits",
        "LOG_LEVEL": "debug",
        "LOG_FORMAT": "Console",
        "LOG_FILE": "/var/log/worker.jsonl",
        "VAULT_ADDR": "http://127.0.0.1:8200",
        "VAULT_ROLE_ID": "role-123",
        "VAULT_SECRET_ID_FILE": str(secret),
        "TEMPORAL_REQUIRE_TLS": "yes",
        "TEMPORAL_TLS_SERVER_NAME": "temporal.example",
        "BLOCK_POLL_SECONDS": "2.5",
        "AGENT_TASK_DIR": "~/queue",
        "TEMPORAL_SUMMARY_DIR": "/srv/summaries",
        "MATRIX_HOMESERVER": "https://matrix.example/",
        "MATRIX_ACCESS_TOKEN_FILE": str(token),
        "AGENT_HEARTBEAT_TIMEOUT": "600",
        "WORKER_HOST": "alpha.lan",
        "AGENT_HOSTS": "claudebox=alpha.lan, dev = beta",
        "HOST_WAIT_SECONDS": "60",
        "FAILURE_HOLD": "7200",
        "MAX_AUDIT_ROUNDS": "5",
        "VERIFY_FIXES": "yes",
        "DECISION_REMINDERS": "30m, 4h,1d",
        "PIPELINE_BUDGET_USD": "25",
    }
    assert set(env) - {"HOME"} == set(DEFAULTS)
    config = load_config(env)
    expected = {
        "home": Path(HOME),
        "temporal_address": "temporal.internal:7234",
        "temporal_namespace": "builds",
        "task_queue": "other-queue",
        "matrix_room": "ops",
        "send_matrix_script": Path("/opt/bin/send.sh"),
        "audit_dir": Path("/srv/audits"),
        "log_level": "DEBUG",
        "log_format": "console",
        "log_file": Path("/var/log/worker.jsonl"),
        "vault_addr": "http://127.0.0.1:8200",
        "vault_role_id": "role-123",
        "vault_secret_id_file": secret,
        "require_tls": True,
        "tls_server_name": "temporal.example",
        "block_poll_seconds": 2.5,
        "agent_task_dir": Path(HOME, "queue"),  # `~` is the HOME of the environment read
        "summary_dir": Path("/srv/summaries"),
        "matrix_homeserver": "https://matrix.example",
        "matrix_access_token_file": token,
        "heartbeat_timeout_seconds": 600,
        "worker_host": "alpha.lan",
        "agent_hosts": {"claudebox": "alpha.lan", "dev": "beta"},
        "host_wait_seconds": 60.0,
        "failure_hold_seconds": 7200.0,
        "max_audit_rounds": 5,
        "verify_fixes": True,
        "decision_reminders": [1800.0, 14400.0, 86400.0],
        "budget_usd": 25.0,
    }
    assert {field: getattr(config, field) for field in expected} == expected
    assert config.vault_configured is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("claudebox=alpha", {"claudebox": "alpha"}),
        (
            " claudebox = alpha , security-agent=alpha,dev=beta.lan ",
            {"claudebox": "alpha", "security-agent": "alpha", "dev": "beta.lan"},
        ),
        ("dispatcher=alpha,dev=alpha", {"dispatcher": "alpha", "dev": "alpha"}),
    ],
)
def test_agent_hosts_parse(text: str, expected: dict[str, str]) -> None:
    assert parse_agent_hosts(text) == expected
    assert load_config({"HOME": HOME, "AGENT_HOSTS": text}).agent_hosts == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("claudebox", "AGENT_HOSTS entry 'claudebox' is not agent=host"),
        ("claudebox:alpha", "AGENT_HOSTS entry 'claudebox:alpha' is not agent=host"),
        ("claudebox=", "AGENT_HOSTS entry 'claudebox=': '' is not a host name"),
        ("=alpha", "AGENT_HOSTS entry '=alpha': '' is not an agent name"),
        ("dev=alpha,,claudebox=beta", "AGENT_HOSTS='dev=alpha,,claudebox=beta' has an empty entry"),
        ("dev=alpha,", "AGENT_HOSTS='dev=alpha,' has an empty entry"),
        ("dev=al@pha", "AGENT_HOSTS entry 'dev=al@pha': 'al@pha' is not a host name"),
        ("dev=a/b", "AGENT_HOSTS entry 'dev=a/b': 'a/b' is not a host name"),
        ("my agent=alpha", "AGENT_HOSTS entry 'my agent=alpha': 'my agent' is not an agent name"),
        ("dev=alpha=beta", "AGENT_HOSTS entry 'dev=alpha=beta': 'alpha=beta' is not a host name"),
        ("dev=alpha,dev=beta", "AGENT_HOSTS entry 'dev=beta': agent 'dev' is mapped twice"),
        ("dev=alpha,dev=alpha", "AGENT_HOSTS entry 'dev=alpha': agent 'dev' is mapped twice"),
        (f"dev={'h' * 64}", "is not a host name"),
    ],
)
def test_agent_hosts_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config({"HOME": HOME, "AGENT_HOSTS": text})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("host", ["alpha", "beta.lan", "host_2", "A-1", "h" * 63])
def test_worker_host_accepted(host: str) -> None:
    assert parse_worker_host(host) == host


@pytest.mark.parametrize("host", ["alpha@b", "-alpha", "a b", "a/b", "h" * 64, "ä"])
def test_worker_host_refused(host: str) -> None:
    with pytest.raises(ConfigError, match=r"^WORKER_HOST="):
        parse_worker_host(host)


def test_worker_host_defaults_to_the_machine_name() -> None:
    assert parse_worker_host(None) == socket.gethostname()


def test_home_is_the_root_of_the_default_paths() -> None:
    config = load_config({"HOME": "/srv/worker-home"})
    assert config.agent_task_dir == Path("/srv/worker-home/.claude/task-queue")
    assert config.summary_dir == Path("/srv/worker-home/repos/personal/agent-activity/workflows")


def test_client_settings_are_what_the_worker_uses() -> None:
    """complete_activity.py reads the same address, namespace and TLS settings as the worker."""
    env = {
        "HOME": HOME,
        "TEMPORAL_ADDRESS": "h:1",
        "TEMPORAL_NAMESPACE": "ns",
        "TEMPORAL_TLS_SERVER_NAME": "tls.example",
    }
    client, worker = load_client_settings(env), load_config(env)
    for field in ("temporal_address", "temporal_namespace", "tls_server_name", "require_tls"):
        assert getattr(client, field) == getattr(worker, field)


CLIENT_FIELDS = {
    "TEMPORAL_ADDRESS": "temporal_address",
    "TEMPORAL_NAMESPACE": "temporal_namespace",
    "VAULT_ADDR": "vault_addr",
    "VAULT_ROLE_ID": "vault_role_id",
    "VAULT_SECRET_ID_FILE": "vault_secret_id_file",
    "TEMPORAL_REQUIRE_TLS": "require_tls",
    "TEMPORAL_TLS_SERVER_NAME": "tls_server_name",
}
# values right and wrong for one variable or another; the worker also checks the secret id file
# (complete_activity.py does as it reads it), so that one is a private file, as `~/` or not
CLIENT_VALUES = st.sampled_from(
    [
        *("", " ", "h:1", " h:7233 ", "no-port", ":7233", "host:", "host:http", "ns"),
        *("yes", "No", "TRUE", "0", "on", "2", "http://v:8200", "https://v", "v:8200"),
    ]
)
CLIENT_ENVS = st.fixed_dictionaries(
    {},
    optional={
        **dict.fromkeys(CLIENT_FIELDS, CLIENT_VALUES),
        "VAULT_SECRET_ID_FILE": st.sampled_from(["", "SECRET", "~/secret-id"]),
    },
)


@settings(max_examples=300, deadline=None)
@given(CLIENT_ENVS)
def test_the_cli_reads_the_client_variables_as_the_worker_does(given_env: dict[str, str]) -> None:
    """complete_activity.py reads its seven variables without pydantic: the same values as
    WorkerConfig's fields, or the same line."""
    with tempfile.TemporaryDirectory() as home:
        secret = private_file(Path(home, "secret-id"))
        env = {"HOME": home, **{k: v.replace("SECRET", str(secret)) for k, v in given_env.items()}}
        results = []
        for read in (load_client_settings, load_config):
            try:
                client = read(env)
            except ConfigError as err:
                results.append(str(err))
            else:
                fields = [*CLIENT_FIELDS.values(), "vault_configured"]
                results.append(str({field: getattr(client, field) for field in fields}))
        assert results[0] == results[1]


def test_the_cli_reads_its_settings_without_pydantic() -> None:
    """Importing pydantic would cost every agent completion about 0.1 s (bench P2)."""
    code = (
        "import sys, config, vault; config.load_client_settings(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'pydantic_core'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_readme_environment_table_is_the_settings_model() -> None:
    """Each variable WorkerConfig reads has its README row, and each row its variable."""
    rows = first_column_names((ROOT / "README.md").read_text(), "## Environment")
    variables = {field.validation_alias for field in WorkerConfig.model_fields.values()}
    # observability reads its own two, when it is turned on
    assert rows - {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"} == variables


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("Yes", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("", False),
    ],
)
def test_require_tls_words(value: str, expected: bool) -> None:
    assert load_config({"HOME": HOME, "TEMPORAL_REQUIRE_TLS": value}).require_tls is expected


def refusal(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config({"HOME": HOME, **env})
    return str(caught.value)


@pytest.mark.parametrize("value", ["verbose", "trace", "20"])
def test_unknown_log_level(value: str) -> None:
    assert refusal({"LOG_LEVEL": value}).startswith("LOG_LEVEL=")


@pytest.mark.parametrize("value", ["text", "pretty", "json5"])
def test_unknown_log_format(value: str) -> None:
    assert refusal({"LOG_FORMAT": value}) == f"LOG_FORMAT={value!r} is not one of console, json"


@pytest.mark.parametrize("value", ["abc", "30s", "nan", "inf", "0", "-1", "3601"])
def test_bad_block_poll_seconds(value: str) -> None:
    assert refusal({"BLOCK_POLL_SECONDS": value}).startswith(f"BLOCK_POLL_SECONDS={value!r}")


@pytest.mark.parametrize("value", ["abc", "2h", "nan", "inf", "-1", "2592001"])
def test_bad_failure_hold(value: str) -> None:
    assert refusal({"FAILURE_HOLD": value}).startswith(f"FAILURE_HOLD={value!r}")


@pytest.mark.parametrize("value", ["maybe", "on", "2"])
def test_bad_require_tls(value: str) -> None:
    assert refusal({"TEMPORAL_REQUIRE_TLS": value}).startswith("TEMPORAL_REQUIRE_TLS=")


@pytest.mark.parametrize("value", ["no-port", "host:", ":7233", "host:http"])
def test_bad_temporal_address(value: str) -> None:
    assert refusal({"TEMPORAL_ADDRESS": value}).startswith("TEMPORAL_ADDRESS=")


def test_missing_secret_id_file(tmp_path: Path) -> None:
    """Checked even when VAULT_ADDR is unset, as the original did."""
    missing = tmp_path / "nope"
    message = refusal({"VAULT_SECRET_ID_FILE": str(missing)})
    assert message == f"VAULT_SECRET_ID_FILE={str(missing)!r} does not exist"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o610])
def test_secret_id_file_readable_by_others(tmp_path: Path, mode: int) -> None:
    secret = private_file(tmp_path / "secret-id", mode=mode)
    message = refusal({"VAULT_SECRET_ID_FILE": str(secret)})
    assert message.startswith("VAULT_SECRET_ID_FILE=")
    assert f"mode {mode:04o}" in message
    assert "s3cr3t" not in message


def test_secret_id_file_owner_only_is_accepted(tmp_path: Path) -> None:
    for mode in (0o600, 0o400):
        secret = private_file(tmp_path / f"secret-{mode:o}", mode=mode)
        config = load_config({"HOME": HOME, "VAULT_SECRET_ID_FILE": str(secret)})
        assert config.vault_secret_id_file == secret


def test_secret_id_path_is_a_directory(tmp_path: Path) -> None:
    assert "not a regular file" in refusal({"VAULT_SECRET_ID_FILE": str(tmp_path)})


def test_start_up_and_vault_read_word_a_bad_secret_file_alike(tmp_path: Path) -> None:
    """config.load_config() (exit 2) and vault.read_secret_id() (the CLI, exit 5) share one
    check: the same sentence for a missing, a loose and a non-regular file."""
    import vault
    from exceptions import CredentialError

    loose = private_file(tmp_path / "loose", mode=0o640)
    for path in (tmp_path / "missing", loose, tmp_path):
        with pytest.raises(CredentialError) as caught:
            vault.read_secret_id(path)
        assert str(caught.value) == refusal({"VAULT_SECRET_ID_FILE": str(path)})


def test_matrix_api_settings(tmp_path: Path) -> None:
    token = private_file(tmp_path / "token", "syt_abc")
    assert refusal({"MATRIX_HOMESERVER": "https://m.example"}).startswith("MATRIX_HOMESERVER")
    assert refusal(
        {"MATRIX_HOMESERVER": "m.example", "MATRIX_ACCESS_TOKEN_FILE": str(token)}
    ).startswith("MATRIX_HOMESERVER=")
    empty = private_file(tmp_path / "empty", "\n")
    assert refusal({"MATRIX_ACCESS_TOKEN_FILE": str(empty)}).endswith("is empty")
    missing = refusal({"MATRIX_ACCESS_TOKEN_FILE": str(tmp_path / "missing")})
    assert missing.startswith("MATRIX_ACCESS_TOKEN_FILE=") and "cannot be read" in missing
    assert "syt_abc" not in missing


def test_config_loaded_fields_hold_no_secret_path(tmp_path: Path) -> None:
    secret = private_file(tmp_path / "secret-id-file")
    token = private_file(tmp_path / "matrix-token-file", "syt_abc")
    config = load_config(
        {
            "HOME": HOME,
            "VAULT_ADDR": "http://v:8200",
            "VAULT_ROLE_ID": "r",
            "VAULT_SECRET_ID_FILE": str(secret),
            "MATRIX_HOMESERVER": "https://m.example",
            "MATRIX_ACCESS_TOKEN_FILE": str(token),
        }
    )
    text = json.dumps(config.public_fields())
    assert str(tmp_path) not in text
    assert config.public_fields()["vault_configured"] is True
    assert config.public_fields()["matrix_api"] is True


def test_observability_is_off_and_unimported_without_endpoint() -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT unset or empty: nothing from opentelemetry is imported."""
    code = (
        "import sys, observability\n"
        "on = observability.init_observability()\n"
        "print(on, any(m.split('.')[0] == 'opentelemetry' for m in sys.modules))\n"
    )
    for value in (None, ""):
        env = bare_env(TEMPORAL_ADDRESS=closed_address())
        if value is not None:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = value
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            text=True,
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
        assert out.split() == ["False", "False"]


# --- Through the real entry point ------------------------------------------------------------


def test_no_setting_of_the_tests_reaches_a_worker_they_start() -> None:
    # bare_env leaves these out of every environment built for a worker process
    assert [name for name in DEFAULTS if not name.startswith(FOREIGN_VARS)] == []


def run_worker(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        worker_command(),
        cwd=cwd,
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
    )


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOG_LEVEL", "verbose"),
        ("BLOCK_POLL_SECONDS", "abc"),
        ("FAILURE_HOLD", "1h"),
        ("TEMPORAL_REQUIRE_TLS", "maybe"),
        ("TEMPORAL_ADDRESS", "no-port"),
        ("VAULT_SECRET_ID_FILE", "{tmp}/missing-secret-id"),
        ("VAULT_SECRET_ID_FILE", "{tmp}/shared-secret-id"),
        ("LOG_FILE", "{tmp}/shared-secret-id/worker.log"),  # a directory that is a file
        ("MATRIX_HOMESERVER", "https://matrix.example"),
        ("WORKER_HOST", "alpha/beta"),
        ("AGENT_HOSTS", "claudebox"),
        ("HOST_WAIT_SECONDS", "0"),
        ("MAX_AUDIT_ROUNDS", "0"),
        ("VERIFY_FIXES", "sometimes"),
        ("DECISION_REMINDERS", "4"),
        ("DECISION_REMINDERS", "0s"),
        ("DECISION_REMINDERS", "1d,4h"),
        ("DECISION_REMINDERS", "8d"),  # beyond the gate's 7 days, with no longer hold
        ("PIPELINE_BUDGET_USD", "0"),
    ],
)
def test_worker_refuses_bad_setting(tmp_path: Path, name: str, value: str) -> None:
    private_file(tmp_path / "shared-secret-id", mode=0o644)
    env = bare_env(**{"TEMPORAL_ADDRESS": closed_address(), name: value.format(tmp=tmp_path)})
    env.setdefault("HOME", str(tmp_path))
    proc = run_worker(env, tmp_path)
    line = stderr_line(proc.stderr)
    assert proc.returncode == 2, proc
    assert line.startswith(f"temporal-build-worker: ConfigError: {name}"), line


def test_worker_exits_3_when_temporal_is_unreachable(tmp_path: Path) -> None:
    address = closed_address()
    proc = run_worker(bare_env(TEMPORAL_ADDRESS=address, HOME=str(tmp_path)), tmp_path)
    line = stderr_line(proc.stderr)
    assert proc.returncode == 3, proc
    assert line.startswith("temporal-build-worker: cannot reach Temporal"), line
    assert [r["event"] for r in json_lines(proc.stdout)][:2] == ["config_loaded", "worker_starting"]


@pytest.mark.slow
def test_worker_exit_code_is_reliable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """40 runs against an unreachable server: each exits 3 with its one line, none crashes.

    Before worker.py left through os._exit, about 15% of these runs died in interpreter
    teardown (SIGABRT or SIGSEGV) after printing their line.
    """
    runs, parallel = 40, 3
    env = bare_env(TEMPORAL_ADDRESS=closed_address(), HOME=str(tmp_path))
    started = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        procs = list(pool.map(lambda _: run_worker(env, tmp_path), range(runs)))
    wall = time.monotonic() - started
    assert Counter(p.returncode for p in procs) == Counter({3: runs}), [
        (p.returncode, p.stderr[-300:]) for p in procs if p.returncode != 3
    ]
    for proc in procs:
        assert stderr_line(proc.stderr).startswith("temporal-build-worker: cannot reach Temporal")
    with capsys.disabled():
        print(f"\n[worker.py] {runs} runs, all exit 3, {parallel} at a time: {wall:.1f} s wall")


def test_config_loaded_line_names_no_secret_path(tmp_path: Path) -> None:
    """With Vault configured (and unreachable), no log line names the secret-id file."""
    secret = private_file(tmp_path / "approle-secret-id")
    env = bare_env(
        TEMPORAL_ADDRESS=closed_address(),
        HOME=str(tmp_path),
        VAULT_ADDR=f"http://{closed_address()}",
        VAULT_ROLE_ID="role-123",
        VAULT_SECRET_ID_FILE=str(secret),
    )
    proc = run_worker(env, tmp_path)
    assert proc.returncode == 2, proc
    assert stderr_line(proc.stderr).startswith("temporal-build-worker: CredentialError: ")
    records = json_lines(proc.stdout)
    loaded = [r for r in records if r["event"] == "config_loaded"]
    assert len(loaded) == 1
    assert loaded[0]["vault_configured"] is True
    for text in (proc.stdout, proc.stderr):
        assert str(secret) not in text
        assert secret.name not in text
        assert "s3cr3t-id" not in text


def test_log_file_gets_the_stdout_lines_and_is_private(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "nested" / "worker.jsonl"
    env = bare_env(TEMPORAL_ADDRESS=closed_address(), HOME=str(tmp_path), LOG_FILE=str(log_file))
    proc = run_worker(env, tmp_path)
    assert proc.returncode == 3, proc
    assert (log_file.stat().st_mode & 0o777) == 0o600
    written = log_file.read_text()
    assert written == proc.stdout
    events = [r["event"] for r in json_lines(written)]
    assert events[:3] == ["config_loaded", "worker_starting", "tls_disabled"]
    # a second run appends rather than truncating
    proc2 = run_worker(env, tmp_path)
    assert proc2.returncode == 3
    assert log_file.read_text() == written + proc2.stdout


def test_reminders_may_reach_as_far_as_the_longest_wait() -> None:
    """A reminder past the gate's 7 days is refused unless FAILURE_HOLD waits that long."""
    assert load_config({"DECISION_REMINDERS": "7d"}).decision_reminders == [604800.0]
    refused = refusal({"DECISION_REMINDERS": "1d,8d"})
    assert refused.startswith("DECISION_REMINDERS has a reminder after 691200 s, beyond")
    held = load_config({"DECISION_REMINDERS": "1d,8d", "FAILURE_HOLD": str(10 * 86400)})
    assert held.decision_reminders == [86400.0, 691200.0]
