"""The worker's settings as a pydantic-settings model, and the base the agent runner's share.

A field's variable is its `validation_alias`; its type, bounds and default are on the field, and
its rule (config.py) a validator. `EnvSettings.from_env` reads the variables of a mapping through
pydantic-settings' environment source and validates them; the first error becomes one
`ConfigError` line naming the variable and its value, never a pydantic dump. Built directly
(`WorkerConfig(task_queue=...)`, as tests do), a model reads nothing from the environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    computed_field,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticUndefined
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

import config
from exceptions import ConfigError
from models import GATE_TIMEOUT_SECONDS, MAX_AUDIT_ROUNDS_LIMIT, parse_reminders
from secret_files import check_secret_file

MAX_FAILURE_HOLD = 30 * 86400  # seconds: a failed stage waits at most 30 days for the operator
MIN_HEARTBEAT_TIMEOUT = 3  # agents heartbeat every third of it: at least once a second
MAX_HEARTBEAT_TIMEOUT = 86400  # no agent stage runs longer than a day


def _home_path(path: Path, info: ValidationInfo) -> Path:
    return config.under_home(path, info.data["home"])


def _text(rule: Callable[[str], object]) -> Callable[[object], object]:
    """`rule` for a variable's text; a value given as itself (a default, a test's) passes."""
    return lambda value: rule(value) if isinstance(value, str) else value


def variable(name: str, default: Any = PydanticUndefined, **field: Any) -> Any:
    """The field read from variable `name`: pydantic's Field, aliased to it."""
    return Field(default, validation_alias=name, **field)


HomePath = Annotated[Path, AfterValidator(_home_path)]  # `~` is the `home` field
Flag = Annotated[bool, BeforeValidator(_text(config.boolean))]
LogLevel = Annotated[str, AfterValidator(config.log_level)]
LogFormat = Annotated[str, AfterValidator(config.log_format)]


class _Environment(EnvSettingsSource):
    """The environment source, on a given mapping: blank values are unset, values stripped."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        super().__init__(settings_cls, case_sensitive=True)
        self.env_vars = {name: value.strip() for name, value in env.items() if value.strip()}


class EnvSettings(BaseSettings):
    model_config = SettingsConfigDict(
        frozen=True,
        validate_by_name=True,
        validate_default=True,
        allow_inf_nan=False,
        case_sensitive=True,
    )

    # the root of the default paths, and what `~` stands for; first, so the paths see it
    home: Path = variable("HOME", default_factory=Path.home)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # from_env reads the environment, given as a mapping

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        try:
            return cls(**_Environment(cls, env)())
        except ValidationError as err:
            raise env_error(cls, err.errors(include_url=False)[0]) from None


def env_error(model: type[EnvSettings], error: ErrorDetails) -> ConfigError:
    """The line for pydantic's `error` on a variable of `model`."""
    name = str(error["loc"][0])
    field = next(f for f in model.model_fields.values() if f.validation_alias == name)
    if error["type"] == "missing":
        return ConfigError(f"{name} is not set: name {field.description}")
    return ConfigError(f"{name}={error['input']!r} {reason(field, error)}")


def reason(field: FieldInfo, error: ErrorDetails) -> str:
    """What is wrong with a value, after its name: a rule's own words, else the field's type and
    bounds in the words the project always used."""
    kind = error["type"]
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind.startswith("int_"):
        return "is not an integer"
    if kind.startswith("float_"):
        return "is not a number"
    if kind in ("greater_than", "greater_than_equal", "less_than_equal", "finite_number"):
        return f"must be {number_rule(field)}"
    return str(field.description or error["msg"])


def number_rule(field: FieldInfo) -> str:
    """`a number between 1 and 5` or `an integer greater than 0`, from the field's bounds."""
    noun = "an integer" if field.annotation is int else "a number"
    bounds = {k: getattr(m, k) for m in field.metadata for k in ("gt", "ge", "le") if hasattr(m, k)}
    if "gt" in bounds:
        return f"{noun} greater than {bounds['gt']:g}"
    return f"{noun} between {bounds['ge']:g} and {bounds['le']:g}"


def _private_file(path: Path) -> Path:
    check_secret_file(path, "VAULT_SECRET_ID_FILE", ConfigError)
    return path


def _token_file(path: Path) -> Path:
    try:
        if not path.read_text(encoding="utf-8").strip():
            raise ValueError("is empty")
    except OSError as err:
        raise ValueError(f"cannot be read: {err.strerror}") from None
    return path


def _heartbeat_timeout(seconds: int) -> int:
    if seconds and not MIN_HEARTBEAT_TIMEOUT <= seconds <= MAX_HEARTBEAT_TIMEOUT:
        raise ValueError(
            f"must be 0 (off) or between {MIN_HEARTBEAT_TIMEOUT} and {MAX_HEARTBEAT_TIMEOUT} "
            "seconds"
        )
    return seconds


Address = Annotated[str, AfterValidator(config.host_port)]
SecretFile = Annotated[HomePath, AfterValidator(_private_file)]
Homeserver = Annotated[
    str, AfterValidator(config.http_url), AfterValidator(lambda u: u.rstrip("/"))
]
TokenFile = Annotated[HomePath, AfterValidator(_token_file)]
HeartbeatTimeout = Annotated[int, AfterValidator(_heartbeat_timeout)]
WorkerHost = Annotated[str, BeforeValidator(config.parse_worker_host)]
Reminders = Annotated[list[float], NoDecode, BeforeValidator(_text(parse_reminders))]
AgentHosts = Annotated[dict[str, str], NoDecode, BeforeValidator(_text(config.parse_agent_hosts))]


class WorkerConfig(EnvSettings):
    """Everything the worker reads, resolved once at start and handed to the activities.

    `exclude=True` keeps a field out of `public_fields`, the start-up log: secrets, the paths
    to them, and how they are reached.
    """

    # how to reach Temporal; complete_activity.py reads these with config.load_client_settings
    temporal_address: Address = variable("TEMPORAL_ADDRESS", config.DEFAULT_TEMPORAL_ADDRESS)
    temporal_namespace: str = variable("TEMPORAL_NAMESPACE", config.DEFAULT_NAMESPACE)
    vault_addr: str | None = variable("VAULT_ADDR", None, exclude=True)
    vault_role_id: str | None = variable("VAULT_ROLE_ID", None, exclude=True)
    vault_secret_id_file: SecretFile | None = variable("VAULT_SECRET_ID_FILE", None, exclude=True)
    require_tls: Flag = variable("TEMPORAL_REQUIRE_TLS", False)
    tls_server_name: str | None = variable("TEMPORAL_TLS_SERVER_NAME", None, exclude=True)

    task_queue: str = variable("TASK_QUEUE", "helm-build")
    matrix_room: str = variable("MATRIX_ROOM", "sysadmin")
    log_level: LogLevel = variable("LOG_LEVEL", "INFO")
    log_format: LogFormat | None = variable("LOG_FORMAT", None)  # None: decided by stdout
    log_file: HomePath | None = variable("LOG_FILE", None)
    block_poll_seconds: float = variable("BLOCK_POLL_SECONDS", 300.0, ge=0.05, le=3600)
    agent_task_dir: HomePath = variable("AGENT_TASK_DIR", Path("~/.claude/task-queue"))
    audit_dir: HomePath = variable("TEMPORAL_AUDIT_DIR", Path("~/.claude/comms/artifacts"))
    summary_dir: HomePath = variable(
        "TEMPORAL_SUMMARY_DIR", Path("~/repos/personal/agent-activity/workflows")
    )
    send_matrix_script: HomePath = variable(
        "SEND_MATRIX_SCRIPT", Path("~/scripts/send-matrix.sh"), exclude=True
    )
    matrix_homeserver: Homeserver | None = variable("MATRIX_HOMESERVER", None, exclude=True)
    matrix_access_token_file: TokenFile | None = variable(
        "MATRIX_ACCESS_TOKEN_FILE", None, exclude=True
    )
    # 0: agent stages carry no heartbeat timeout
    heartbeat_timeout_seconds: HeartbeatTimeout = variable("AGENT_HEARTBEAT_TIMEOUT", 0)
    worker_host: WorkerHost = variable(
        "WORKER_HOST", default_factory=lambda: config.parse_worker_host(None)
    )
    agent_hosts: AgentHosts = variable("AGENT_HOSTS", default_factory=dict)
    host_wait_seconds: float = variable("HOST_WAIT_SECONDS", 900.0, ge=1, le=86400)
    failure_hold_seconds: float = variable("FAILURE_HOLD", 0.0, ge=0, le=MAX_FAILURE_HOLD)
    # review loops: audits per pipeline (the first included), and re-auditing applied flags
    max_audit_rounds: int = variable("MAX_AUDIT_ROUNDS", 3, ge=1, le=MAX_AUDIT_ROUNDS_LIMIT)
    verify_fixes: Flag = variable("VERIFY_FIXES", False)
    # seconds after a wait for a person began at which to remind them; none by default
    decision_reminders: Reminders = variable("DECISION_REMINDERS", default_factory=list)
    # what a pipeline's agents may spend, in US dollars; unset is no limit
    budget_usd: float | None = variable("PIPELINE_BUDGET_USD", None, gt=0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def vault_configured(self) -> bool:
        return config.vault_configured(self)

    @model_validator(mode="after")
    def _pairs(self) -> Self:
        config.check_vault_addr(self)
        if self.matrix_homeserver and self.matrix_access_token_file is None:
            raise ConfigError("MATRIX_HOMESERVER is set but MATRIX_ACCESS_TOKEN_FILE is not")
        longest = max(GATE_TIMEOUT_SECONDS, self.failure_hold_seconds)
        if self.decision_reminders and self.decision_reminders[-1] > longest:
            raise ConfigError(
                f"DECISION_REMINDERS has a reminder after {self.decision_reminders[-1]:g} s, "
                f"beyond the longest wait ({longest:g} s: the gate's 7 days, or FAILURE_HOLD)"
            )
        return self

    def public_fields(self) -> dict[str, object]:
        """What `config_loaded` logs: no secret, no path to one."""
        fields = self.model_dump(mode="json")
        fields["matrix_api"] = bool(self.matrix_homeserver and self.matrix_access_token_file)
        return fields


def load_config(env: Mapping[str, str] | None = None) -> WorkerConfig:
    return WorkerConfig.from_env(os.environ if env is None else env)
