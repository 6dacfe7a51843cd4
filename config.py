"""Settings from the environment.

`load_client_settings()` is what both the worker and complete_activity.py need to reach Temporal;
`load_config()` adds the worker's own settings. Each bad value ends in one `ConfigError` naming
the variable. An empty variable counts as unset (the original let it override the default).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from exceptions import ConfigError
from secret_files import check_secret_file

# A host name as WORKER_HOST and AGENT_HOSTS give it: safe inside a task-queue name, no `@`.
HOST_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
TRUE_WORDS = {"1", "true", "yes"}
FALSE_WORDS = {"", "0", "false", "no"}
MAX_FAILURE_HOLD = 30 * 86400  # seconds: a failed stage waits at most 30 days for the operator
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("console", "json")  # unset: console on a terminal, else json


def env_value(env: Mapping[str, str], name: str) -> str | None:
    """The variable's value, stripped; unset, empty and blank all mean "use the default"."""
    value = env.get(name, "").strip()
    return value or None


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean (use 1/true/yes or 0/false/no)")


def home_dir(env: Mapping[str, str]) -> Path:
    """`HOME`, the root of every default path."""
    home = env_value(env, "HOME")
    return Path(home) if home else Path.home()


def env_path(env: Mapping[str, str], name: str, default: Path) -> Path:
    """A path setting, `~` expanded, or `default` when unset."""
    value = env_value(env, name)
    return Path(value).expanduser() if value else default


@dataclass(frozen=True)
class ClientSettings:
    """How to reach Temporal: shared by the worker and complete_activity.py."""

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    vault_addr: str | None = None
    vault_role_id: str | None = None
    vault_secret_id_file: Path | None = None
    require_tls: bool = False
    tls_server_name: str | None = None

    @property
    def vault_configured(self) -> bool:
        return bool(self.vault_addr and self.vault_role_id and self.vault_secret_id_file)


def load_client_settings(env: Mapping[str, str] | None = None) -> ClientSettings:
    env = os.environ if env is None else env
    address = env_value(env, "TEMPORAL_ADDRESS") or "localhost:7233"
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"TEMPORAL_ADDRESS={address!r} is not host:port")
    secret_file = env_value(env, "VAULT_SECRET_ID_FILE")
    vault_addr = env_value(env, "VAULT_ADDR")
    # Checked only when Vault is fully configured: a shell may carry VAULT_ADDR for other tools.
    vault_used = bool(env_value(env, "VAULT_ROLE_ID") and secret_file)
    if vault_addr and vault_used and not vault_addr.startswith(("http://", "https://")):
        raise ConfigError(f"VAULT_ADDR={vault_addr!r} is not an http(s) URL")
    return ClientSettings(
        temporal_address=address,
        temporal_namespace=env_value(env, "TEMPORAL_NAMESPACE") or "default",
        vault_addr=vault_addr,
        vault_role_id=env_value(env, "VAULT_ROLE_ID"),
        vault_secret_id_file=Path(secret_file).expanduser() if secret_file else None,
        require_tls=_flag(env, "TEMPORAL_REQUIRE_TLS"),
        tls_server_name=env_value(env, "TEMPORAL_TLS_SERVER_NAME"),
    )


@dataclass(frozen=True)
class WorkerConfig(ClientSettings):
    """Everything the worker reads, resolved once at start and handed to the activities."""

    task_queue: str = "helm-build"
    matrix_room: str = "sysadmin"
    log_level: str = "INFO"
    log_format: str | None = None  # one of LOG_FORMATS; None: decided by stdout
    log_file: Path | None = None
    block_poll_seconds: float = 300.0
    agent_task_dir: Path = Path("~/.claude/task-queue")
    audit_dir: Path = Path("~/.claude/comms/artifacts")
    summary_dir: Path = Path("~/repos/personal/agent-activity/workflows")
    send_matrix_script: Path = Path("~/scripts/send-matrix.sh")
    matrix_homeserver: str | None = None
    matrix_access_token_file: Path | None = None
    heartbeat_timeout_seconds: int = 0  # 0: agent stages carry no heartbeat timeout
    worker_host: str = "localhost"
    agent_hosts: dict[str, str] = field(default_factory=dict)
    host_wait_seconds: float = 900.0
    failure_hold_seconds: float = 0.0

    def public_fields(self) -> dict[str, object]:
        """What `config_loaded` logs: no secret, no path to one."""
        return {
            "temporal_address": self.temporal_address,
            "temporal_namespace": self.temporal_namespace,
            "task_queue": self.task_queue,
            "matrix_room": self.matrix_room,
            "log_level": self.log_level,
            "log_format": self.log_format,
            "log_file": str(self.log_file) if self.log_file else None,
            "vault_configured": self.vault_configured,
            "require_tls": self.require_tls,
            "block_poll_seconds": self.block_poll_seconds,
            "agent_task_dir": str(self.agent_task_dir),
            "audit_dir": str(self.audit_dir),
            "summary_dir": str(self.summary_dir),
            "matrix_api": bool(self.matrix_homeserver and self.matrix_access_token_file),
            "heartbeat_timeout_seconds": self.heartbeat_timeout_seconds,
            "worker_host": self.worker_host,
            "agent_hosts": dict(self.agent_hosts),
            "host_wait_seconds": self.host_wait_seconds,
            "failure_hold_seconds": self.failure_hold_seconds,
        }


def log_settings(env: Mapping[str, str]) -> tuple[str, str | None]:
    """LOG_LEVEL and LOG_FORMAT, as the worker and the agent runner read them."""
    level = (env_value(env, "LOG_LEVEL") or "INFO").upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL={level!r} is not one of {', '.join(LOG_LEVELS)}")
    log_format = (env_value(env, "LOG_FORMAT") or "").lower() or None
    if log_format is not None and log_format not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT={log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    return level, log_format


def load_config(env: Mapping[str, str] | None = None) -> WorkerConfig:
    env = os.environ if env is None else env
    client = load_client_settings(env)
    home = home_dir(env)

    level, log_format = log_settings(env)

    poll = _seconds(env, "BLOCK_POLL_SECONDS", "300", 0.05, 3600)

    heartbeat = _heartbeat_timeout(env)

    if client.vault_secret_id_file is not None:
        check_secret_file(client.vault_secret_id_file, "VAULT_SECRET_ID_FILE", ConfigError)

    homeserver = env_value(env, "MATRIX_HOMESERVER")
    token_file_text = env_value(env, "MATRIX_ACCESS_TOKEN_FILE")
    token_file = Path(token_file_text).expanduser() if token_file_text else None
    if homeserver and not homeserver.startswith(("http://", "https://")):
        raise ConfigError(f"MATRIX_HOMESERVER={homeserver!r} is not an http(s) URL")
    if homeserver and token_file is None:
        raise ConfigError("MATRIX_HOMESERVER is set but MATRIX_ACCESS_TOKEN_FILE is not")
    if token_file is not None:
        try:
            if not token_file.read_text(encoding="utf-8").strip():
                raise ConfigError(f"MATRIX_ACCESS_TOKEN_FILE={str(token_file)!r} is empty")
        except OSError as err:
            raise ConfigError(
                f"MATRIX_ACCESS_TOKEN_FILE={str(token_file)!r} cannot be read: {err.strerror}"
            ) from None

    hold = _seconds(env, "FAILURE_HOLD", "0", 0, MAX_FAILURE_HOLD)

    log_file = env_value(env, "LOG_FILE")
    fields = {k: getattr(client, k) for k in ClientSettings.__dataclass_fields__}
    return WorkerConfig(
        **fields,
        task_queue=env_value(env, "TASK_QUEUE") or "helm-build",
        matrix_room=env_value(env, "MATRIX_ROOM") or "sysadmin",
        log_level=level,
        log_format=log_format,
        log_file=Path(log_file).expanduser() if log_file else None,
        block_poll_seconds=poll,
        agent_task_dir=env_path(env, "AGENT_TASK_DIR", home / ".claude" / "task-queue"),
        audit_dir=env_path(env, "TEMPORAL_AUDIT_DIR", home / ".claude" / "comms" / "artifacts"),
        summary_dir=env_path(
            env,
            "TEMPORAL_SUMMARY_DIR",
            home / "repos" / "personal" / "agent-activity" / "workflows",
        ),
        send_matrix_script=env_path(env, "SEND_MATRIX_SCRIPT", home / "scripts" / "send-matrix.sh"),
        matrix_homeserver=homeserver.rstrip("/") if homeserver else None,
        matrix_access_token_file=token_file,
        worker_host=parse_worker_host(env_value(env, "WORKER_HOST")),
        agent_hosts=parse_agent_hosts(env_value(env, "AGENT_HOSTS") or ""),
        host_wait_seconds=_seconds(env, "HOST_WAIT_SECONDS", "900", 1, 86400),
        heartbeat_timeout_seconds=heartbeat,
        failure_hold_seconds=hold,
    )


MIN_HEARTBEAT_TIMEOUT = 3  # agents heartbeat every third of it: at least once a second
MAX_HEARTBEAT_TIMEOUT = 86400  # no agent stage runs longer than a day


def _heartbeat_timeout(env: Mapping[str, str]) -> int:
    """AGENT_HEARTBEAT_TIMEOUT in whole seconds; unset or 0 turns heartbeats off."""
    text = env_value(env, "AGENT_HEARTBEAT_TIMEOUT") or "0"
    if not text.isdigit():
        raise ConfigError(f"AGENT_HEARTBEAT_TIMEOUT={text!r} is not a whole number of seconds")
    seconds = int(text)
    if seconds and not MIN_HEARTBEAT_TIMEOUT <= seconds <= MAX_HEARTBEAT_TIMEOUT:
        raise ConfigError(
            f"AGENT_HEARTBEAT_TIMEOUT={text!r} must be 0 (off) or between "
            f"{MIN_HEARTBEAT_TIMEOUT} and {MAX_HEARTBEAT_TIMEOUT} seconds"
        )
    return seconds


def _seconds(env: Mapping[str, str], name: str, default: str, low: float, high: float) -> float:
    text = env_value(env, name) or default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={text!r} must be between {low:g} and {high:g}")
    return value


def parse_worker_host(value: str | None) -> str:
    """WORKER_HOST, or this machine's host name; it becomes part of a task-queue name."""
    host = value or socket.gethostname()
    if re.fullmatch(HOST_PATTERN, host):
        return host
    rule = "letters, digits, '.', '_' or '-', at most 63 characters"
    if value:
        raise ConfigError(f"WORKER_HOST={host!r} is not a host name ({rule})")
    raise ConfigError(
        f"WORKER_HOST is unset and the machine's name {host!r} is not a host name "
        f"({rule}): set WORKER_HOST"
    )


def parse_agent_hosts(text: str) -> dict[str, str]:
    """AGENT_HOSTS: `agent=host` entries separated by commas, e.g. `claudebox=alpha,dev=beta`.

    Blanks around names are ignored; an empty entry, a missing `=`, a name that is not an agent
    or host name, or an agent given twice is refused, naming the entry.
    """
    from models import AGENT_PATTERN  # here: complete_activity.py imports config, not pydantic

    hosts: dict[str, str] = {}
    if not text.strip():
        return hosts
    for entry in text.split(","):
        agent, sep, host = (part.strip() for part in entry.partition("="))
        where = f"AGENT_HOSTS entry {entry.strip()!r}"
        if not entry.strip():
            raise ConfigError(f"AGENT_HOSTS={text!r} has an empty entry (a stray comma?)")
        if not sep:
            raise ConfigError(f"{where} is not agent=host")
        if not re.fullmatch(AGENT_PATTERN, agent) or len(agent) > 100:
            raise ConfigError(f"{where}: {agent!r} is not an agent name")
        if not re.fullmatch(HOST_PATTERN, host):
            raise ConfigError(f"{where}: {host!r} is not a host name")
        if agent in hosts:
            raise ConfigError(f"{where}: agent {agent!r} is mapped twice")
        hosts[agent] = host
    return hosts


def log_level_number(level: str) -> int:
    return int(getattr(logging, level, logging.INFO))
