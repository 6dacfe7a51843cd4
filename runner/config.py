"""The agent runner's settings: its environment variables (`RunnerSettings`, read as the
worker's are, see settings.py) and AGENT_COMMANDS_FILE, whose entries are `AgentEntry` models:
their fields are the only keys an entry may have. `parse_commands` and `load_settings` are pure,
so every rule is unit-tested directly. Each bad value is one `ConfigError` naming the file or
variable and the key at fault.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails

from activities import task_files
from config import under_home
from exceptions import ConfigError, TaskFileError
from settings import EnvSettings, HomePath, LogFormat, LogLevel, number_rule, variable

DEFAULT_TIMEOUT_SECONDS = 14400.0  # 4 h, the longest agent stage's bound
DEFAULT_HEARTBEAT_SECONDS = 30.0  # when a task file names no heartbeat_seconds
DEFAULT_GLOBAL_CONCURRENCY = 4
DEFAULT_KILL_GRACE_SECONDS = 10.0
MAX_COMMANDS_FILE_BYTES = 256 * 1024


RunnerId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9@._:-]{1,128}$")]


class RunnerSettings(EnvSettings):
    commands_file: HomePath = variable(
        "AGENT_COMMANDS_FILE", description="the YAML file of agent commands"
    )
    task_dir: HomePath = variable("AGENT_TASK_DIR", Path("~/.claude/task-queue"))
    # beside the queue, not in it: consumers of the queue only ever see task files
    log_dir: HomePath = variable(
        "AGENT_RUNNER_LOG_DIR",
        default_factory=lambda data: data["task_dir"].parent / f"{data['task_dir'].name}-logs",
    )
    runner_id: RunnerId = variable(
        "AGENT_RUNNER_ID",
        default_factory=lambda: f"agent-runner@{socket.gethostname()}",
        description="may hold letters, digits and @ . _ : -",
    )
    global_concurrency: int = variable("AGENT_RUNNER_CONCURRENCY", DEFAULT_GLOBAL_CONCURRENCY, gt=0)
    heartbeat_seconds: float = variable(
        "AGENT_RUNNER_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS, gt=0
    )
    kill_grace_seconds: float = variable(
        "AGENT_RUNNER_KILL_GRACE_SECONDS", DEFAULT_KILL_GRACE_SECONDS, gt=0
    )
    log_level: LogLevel = variable("LOG_LEVEL", "INFO")
    log_format: LogFormat | None = variable("LOG_FORMAT", None)  # as the worker's


def load_settings(env: Mapping[str, str] | None = None) -> RunnerSettings:
    return RunnerSettings.from_env(os.environ if env is None else env)


def _not_a_string(value: object) -> object:
    if isinstance(value, str):
        raise ValueError("must be a list of arguments (no shell), not a string")
    return value


def _program_named(command: tuple[str, ...]) -> tuple[str, ...]:
    if not command[0]:
        raise ValueError("must be a non-empty list of strings")
    return command


def _not_empty(value: object) -> object:
    if value == "":
        raise ValueError("must be a directory path")  # else it would be `.`
    return value


# YAML reads `N: 3` as a number and `X: true` as a boolean: each is passed on as str() of it
Text = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int | float) else v)]

# How an agent's output reports its usage (runner/usage.py reads each)
OutputFormat = Literal["text", "claude-json", "codex-jsonl"]
CODEX_JSONL = "codex-jsonl"


class Prices(BaseModel):
    """What the provider charges, in US dollars per million tokens: codex-jsonl output counts
    tokens but no money, and a price belongs in the commands file, which changes with the
    provider's, not in code."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    input: float = Field(ge=0)
    cached_input: float = Field(ge=0)
    output: float = Field(ge=0)


class AgentEntry(BaseModel):
    """One agent's entry in AGENT_COMMANDS_FILE. A rule's words for any bad value of a field are
    its `description`; a number's come from its bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    command: Annotated[
        tuple[str, ...],
        Field(min_length=1, strict=False),  # a YAML list
        BeforeValidator(_not_a_string),
        AfterValidator(_program_named),
    ] = Field(description="must be a non-empty list of strings")
    # None: the runner's own working directory
    cwd: Annotated[Path, Field(strict=False), BeforeValidator(_not_empty)] | None = Field(
        default=None, description="must be a directory path"
    )
    timeout_seconds: float = Field(default=DEFAULT_TIMEOUT_SECONDS, gt=0)
    concurrency: int = Field(default=1, gt=0)
    rerun_on_restart: bool = Field(default=False, description="must be true or false")
    env: Annotated[
        dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], Text],
        BeforeValidator(lambda value: {} if value is None else value),  # `env:` and nothing
    ] = Field(default_factory=dict, description="must map variable names to strings")
    output: OutputFormat = Field(
        default="text", description="must be text, claude-json or codex-jsonl"
    )
    prices: Prices | None = Field(
        default=None,
        description="must map input, cached_input and output to US dollars per million tokens "
        "(numbers >= 0)",
    )

    @field_validator("prices")
    @classmethod
    def _prices_for_codex(cls, prices: Prices | None, info: ValidationInfo) -> Prices | None:
        if prices is not None and info.data.get("output") != CODEX_JSONL:
            # claude-json output carries its own cost; a price for text output prices nothing
            raise ValueError(f"are read only with output: {CODEX_JSONL}")
        return prices


class AgentCommand(AgentEntry):
    """How one agent runs: its entry, under its name (the entry's key in the file)."""

    name: str


AgentName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
_COMMANDS = TypeAdapter(Annotated[dict[AgentName, AgentEntry], Field(min_length=1)])


def parse_commands(data: Any, source: str, home: Path) -> dict[str, AgentCommand]:
    """The parsed YAML of AGENT_COMMANDS_FILE: a mapping of agent name to its entry."""
    try:
        entries = _COMMANDS.validate_python(data)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        # an unknown key first: it is often a known one misspelt, whose absence errs too
        first = next((e for e in errors if _unknown_key(e)), errors[0])
        raise _commands_error(first, source) from None
    commands = {}
    for name, entry in entries.items():
        cwd = entry.cwd and under_home(entry.cwd, home)  # `~` is the runner's HOME
        commands[name] = AgentCommand(**(dict(entry) | {"name": name, "cwd": cwd}))
    return commands


def _commands_error(error: ErrorDetails, source: str) -> ConfigError:
    loc = error["loc"]
    if not loc:
        return ConfigError(f"{source} must be a YAML mapping of agent names to their commands")
    name = loc[0]
    if len(loc) == 1:
        return ConfigError(f"{source}: {name} must be a mapping with at least `command`")
    if loc[1] == "[key]":
        return ConfigError(f"{source}: agent name {name!r} must be 1-64 letters, digits, . _ -")
    key = str(loc[1])
    if _unknown_key(error):
        known = f"(known: {', '.join(AgentEntry.model_fields)})"
        return ConfigError(f"{source}: {name}: unknown key {key!r} {known}")
    field = AgentEntry.model_fields[key]
    if error["type"] == "value_error" and len(loc) == 2:
        why = str(error["ctx"]["error"])
    elif field.description:
        why = field.description
    else:
        why = f"must be {number_rule(field)}, not {error['input']!r}"
    return ConfigError(f"{source}: {name}.{key} {why}")


def _unknown_key(error: ErrorDetails) -> bool:
    """An entry's own unknown key; one inside `prices` is that field's error."""
    return error["type"] == "extra_forbidden" and len(error["loc"]) == 2


def load_commands(path: Path, home: Path) -> dict[str, AgentCommand]:
    source = f"AGENT_COMMANDS_FILE {path}"
    try:
        data = task_files.read_yaml(path, MAX_COMMANDS_FILE_BYTES, source)
    except TaskFileError as err:
        raise ConfigError(str(err)) from None
    return parse_commands(data, source, home)
