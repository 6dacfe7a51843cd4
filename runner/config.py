"""The agent runner's settings: AGENT_COMMANDS_FILE and its own environment variables.

`parse_commands` and `load_settings` are pure (they take the parsed YAML and an environment
mapping), so every rule here is unit-tested directly. Each bad value is one `ConfigError` naming
the file or variable and the key at fault.
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activities import task_files
from config import env_path, env_value, home_dir, log_settings
from exceptions import ConfigError, TaskFileError

DEFAULT_TIMEOUT_SECONDS = 14400.0  # 4 h, the longest agent stage's bound
DEFAULT_HEARTBEAT_SECONDS = 30.0  # when a task file names no heartbeat_seconds
DEFAULT_GLOBAL_CONCURRENCY = 4
DEFAULT_KILL_GRACE_SECONDS = 10.0
MAX_COMMANDS_FILE_BYTES = 256 * 1024
AGENT_KEYS = ("command", "cwd", "timeout_seconds", "concurrency", "rerun_on_restart", "env")
_AGENT_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class AgentCommand:
    """How one agent runs: its argument list (no shell) and the limits of each run."""

    name: str
    command: tuple[str, ...]
    cwd: Path | None = None  # None: the runner's own working directory
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    concurrency: int = 1
    rerun_on_restart: bool = False
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunnerSettings:
    commands_file: Path
    task_dir: Path
    log_dir: Path
    runner_id: str
    global_concurrency: int = DEFAULT_GLOBAL_CONCURRENCY
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    kill_grace_seconds: float = DEFAULT_KILL_GRACE_SECONDS
    log_level: str = "INFO"
    log_format: str | None = None  # as the worker's LOG_FORMAT: None decides by stdout


def _number(value: Any, where: str, *, minimum: float = 0.0, integer: bool = False) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not math.isfinite(value) or value <= minimum:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where} must be {kind} greater than {minimum:g}, not {value!r}")
    return float(value)


def _expand_home(text: str, home: Path) -> Path:
    if text == "~":
        return home
    return home / text[2:] if text.startswith("~/") else Path(text)


def parse_agent(name: Any, entry: Any, source: str, home: Path) -> AgentCommand:
    if not isinstance(name, str) or not _AGENT_NAME.match(name):
        raise ConfigError(f"{source}: agent name {name!r} must be 1-64 letters, digits, . _ -")
    where = f"{source}: {name}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping with at least `command`")
    unknown = sorted(str(k) for k in entry if k not in AGENT_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(AGENT_KEYS)})")
    command = entry.get("command")
    if isinstance(command, str):
        raise ConfigError(f"{where}.command must be a list of arguments (no shell), not a string")
    if (
        not isinstance(command, list)
        or not command
        or not all(isinstance(a, str) for a in command)
        or not command[0]
    ):
        raise ConfigError(f"{where}.command must be a non-empty list of strings")
    cwd_text = entry.get("cwd")
    if cwd_text is not None and (not isinstance(cwd_text, str) or not cwd_text):
        raise ConfigError(f"{where}.cwd must be a directory path")
    cwd = _expand_home(cwd_text, home) if cwd_text else None
    env = entry.get("env") or {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and _ENV_NAME.match(k) and isinstance(v, str | int | float)
        for k, v in env.items()
    ):
        raise ConfigError(f"{where}.env must map variable names to strings")
    rerun = entry.get("rerun_on_restart", False)
    if not isinstance(rerun, bool):
        raise ConfigError(f"{where}.rerun_on_restart must be true or false")
    timeout = entry.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    concurrency = entry.get("concurrency", 1)
    return AgentCommand(
        name=name,
        command=tuple(command),
        cwd=cwd,
        timeout_seconds=_number(timeout, f"{where}.timeout_seconds"),
        concurrency=int(_number(concurrency, f"{where}.concurrency", integer=True)),
        rerun_on_restart=rerun,
        env={k: str(v) for k, v in env.items()},
    )


def parse_commands(data: Any, source: str, home: Path) -> dict[str, AgentCommand]:
    """The parsed YAML of AGENT_COMMANDS_FILE: a mapping of agent name to its entry."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{source} must be a YAML mapping of agent names to their commands")
    return {name: parse_agent(name, entry, source, home) for name, entry in data.items()}


def load_commands(path: Path, home: Path) -> dict[str, AgentCommand]:
    source = f"AGENT_COMMANDS_FILE {path}"
    try:
        data = task_files.read_yaml(path, MAX_COMMANDS_FILE_BYTES, source)
    except TaskFileError as err:
        raise ConfigError(str(err)) from None
    return parse_commands(data, source, home)


def _env_number(env: Mapping[str, str], name: str, default: float, integer: bool = False) -> float:
    text = env_value(env, name)
    if text is None:
        return default
    try:
        value: float = int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name}={text!r} is not {kind}") from None
    return _number(value, name, integer=integer)


def default_runner_id() -> str:
    return f"agent-runner@{socket.gethostname()}"


def load_settings(env: Mapping[str, str] | None = None) -> RunnerSettings:
    env = os.environ if env is None else env
    commands = env_value(env, "AGENT_COMMANDS_FILE")
    if commands is None:
        raise ConfigError("AGENT_COMMANDS_FILE is not set: name the YAML file of agent commands")
    home = home_dir(env)
    task_dir = env_path(env, "AGENT_TASK_DIR", home / ".claude" / "task-queue")
    runner_id = env_value(env, "AGENT_RUNNER_ID") or default_runner_id()
    if not re.match(r"^[A-Za-z0-9@._:-]{1,128}$", runner_id):
        raise ConfigError(f"AGENT_RUNNER_ID={runner_id!r} may hold letters, digits and @ . _ : -")
    level, log_format = log_settings(env)
    return RunnerSettings(
        commands_file=Path(commands).expanduser(),
        task_dir=task_dir,
        # beside the queue, not in it: consumers of the queue only ever see task files
        log_dir=env_path(env, "AGENT_RUNNER_LOG_DIR", task_dir.parent / f"{task_dir.name}-logs"),
        runner_id=runner_id,
        global_concurrency=int(
            _env_number(env, "AGENT_RUNNER_CONCURRENCY", DEFAULT_GLOBAL_CONCURRENCY, True)
        ),
        heartbeat_seconds=_env_number(
            env, "AGENT_RUNNER_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS
        ),
        kill_grace_seconds=_env_number(
            env, "AGENT_RUNNER_KILL_GRACE_SECONDS", DEFAULT_KILL_GRACE_SECONDS
        ),
        log_level=level,
        log_format=log_format,
    )
