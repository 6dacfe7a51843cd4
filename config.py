"""Settings from the environment: the rules they are read by, and how to reach Temporal.

The worker's settings are the pydantic-settings model `WorkerConfig` (settings.py), the agent
runner's are `RunnerSettings` (runner/config.py); their fields use the rules here as validators.
This module imports no pydantic and loads `WorkerConfig` and `load_config` on first use:
complete_activity.py, run once per agent completion, and observability import it, and pydantic
would add about 0.1 s to every completion (bench P2). So the CLI's seven variables are read here
by `load_client_settings`, with the same rules as WorkerConfig's fields (a test holds them equal).

A rule takes a variable's text and returns its value, or raises ValueError saying what is wrong;
the line an operator sees puts the variable and its value first: `TEMPORAL_ADDRESS='x' is not
host:port`. A rule that words its whole line raises ConfigError. An empty variable counts as
unset (the original let it override the default).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from exceptions import ConfigError

if TYPE_CHECKING:
    from settings import WorkerConfig, load_config  # noqa: F401 - loaded by __getattr__

# A host name as WORKER_HOST and AGENT_HOSTS give it: safe inside a task-queue name, no `@`.
HOST_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("console", "json")  # unset: console on a terminal, else json
DEFAULT_TEMPORAL_ADDRESS = "localhost:7233"
DEFAULT_NAMESPACE = "default"
_WORDS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_T = TypeVar("_T")


def env_value(env: Mapping[str, str], name: str) -> str | None:
    """The variable's value, stripped; unset, empty and blank all mean "use the default"."""
    value = env.get(name, "").strip()
    return value or None


def home_dir(env: Mapping[str, str]) -> Path:
    """`HOME`, the root of every default path and what `~` stands for."""
    home = env_value(env, "HOME")
    return Path(home) if home else Path.home()


def under_home(path: Path, home: Path) -> Path:
    """`path` with a leading `~` as `home`, the HOME of the environment read."""
    if path.parts[:1] == ("~",):
        return home.joinpath(*path.parts[1:])
    return path.expanduser()  # `~user`


def boolean(text: str) -> bool:
    try:
        return _WORDS[text.lower()]
    except KeyError:
        raise ValueError("is not a boolean (use 1/true/yes or 0/false/no)") from None


def host_port(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError("is not host:port")
    return text


def http_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise ValueError("is not an http(s) URL")
    return text


def log_level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise ValueError(f"is not one of {', '.join(LOG_LEVELS)}")
    return text.upper()


def log_format(text: str) -> str:
    if text.lower() not in LOG_FORMATS:
        raise ValueError(f"is not one of {', '.join(LOG_FORMATS)}")
    return text.lower()


def log_level_number(level: str) -> int:
    return int(getattr(logging, level, logging.INFO))


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


class ClientSettings(Protocol):
    """How to reach Temporal: what `load_client_settings` returns, and what WorkerConfig has."""

    @property
    def temporal_address(self) -> str: ...
    @property
    def temporal_namespace(self) -> str: ...
    @property
    def vault_addr(self) -> str | None: ...
    @property
    def vault_role_id(self) -> str | None: ...
    @property
    def vault_secret_id_file(self) -> Path | None: ...
    @property
    def require_tls(self) -> bool: ...
    @property
    def tls_server_name(self) -> str | None: ...
    @property
    def vault_configured(self) -> bool: ...


def vault_configured(settings: ClientSettings) -> bool:
    return bool(settings.vault_addr and settings.vault_role_id and settings.vault_secret_id_file)


def check_vault_addr(settings: ClientSettings) -> None:
    """VAULT_ADDR is judged only when Vault is fully configured: a shell may carry it for other
    tools."""
    if settings.vault_configured and settings.vault_addr:
        try:
            http_url(settings.vault_addr)
        except ValueError as err:
            raise ConfigError(f"VAULT_ADDR={settings.vault_addr!r} {err}") from None


@dataclass(frozen=True)
class _Client:
    temporal_address: str
    temporal_namespace: str
    vault_addr: str | None
    vault_role_id: str | None
    vault_secret_id_file: Path | None
    require_tls: bool
    tls_server_name: str | None

    @property
    def vault_configured(self) -> bool:
        return vault_configured(self)


def load_client_settings(env: Mapping[str, str] | None = None) -> ClientSettings:
    """WorkerConfig's first seven fields, read as its validators read them."""
    env = os.environ if env is None else env

    def read(name: str, rule: Callable[[str], _T]) -> _T | None:
        value = env_value(env, name)
        try:
            return None if value is None else rule(value)
        except ValueError as err:
            raise ConfigError(f"{name}={value!r} {err}") from None

    secret_id_file = read("VAULT_SECRET_ID_FILE", Path)
    client = _Client(
        temporal_address=read("TEMPORAL_ADDRESS", host_port) or DEFAULT_TEMPORAL_ADDRESS,
        temporal_namespace=read("TEMPORAL_NAMESPACE", str) or DEFAULT_NAMESPACE,
        vault_addr=read("VAULT_ADDR", str),
        vault_role_id=read("VAULT_ROLE_ID", str),
        vault_secret_id_file=secret_id_file and under_home(secret_id_file, home_dir(env)),
        require_tls=read("TEMPORAL_REQUIRE_TLS", boolean) or False,
        tls_server_name=read("TEMPORAL_TLS_SERVER_NAME", str),
    )
    check_vault_addr(client)
    return client


def __getattr__(name: str) -> object:
    # WorkerConfig and load_config need pydantic: loaded here on first use, see the docstring
    if name in ("WorkerConfig", "load_config"):
        import settings

        return getattr(settings, name)
    raise AttributeError(f"module 'config' has no attribute {name!r}")
