"""What an agent process receives: its environment and its expanded argument list.

Pure functions over the task mapping, so the contract in docs/AGENTS.md is tested directly.
The task token never enters either: `payload.task_token` is skipped, and a `TASK_TOKEN`
inherited from the runner's own environment is dropped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TOKEN_KEY = "task_token"
BUDGET_KEY = "budget_remaining_usd"
PREFIX = "TASK_"
# Inherited settings an agent has no use for, and that would only widen what a prompt-injected
# agent could reach: the runner's own Temporal/Vault credentials and any stale TASK_* variable.
DROPPED_PREFIXES = ("TASK_", "VAULT_", "AGENT_RUNNER_", "AGENT_COMMANDS_FILE")
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*)|(\$))")
_NOT_NAME = re.compile(r"[^A-Z0-9_]")


def env_name(key: str) -> str:
    """`output_dir` -> `TASK_OUTPUT_DIR`; any character that cannot be in a name becomes `_`."""
    return PREFIX + _NOT_NAME.sub("_", key.upper())


def _scalar(value: Any) -> str | None:
    """A payload value as environment text; None for lists, mappings and nulls."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value).replace("\0", "")
    return None


def budget_text(value: Any) -> str | None:
    """The pipeline's remaining budget as an agent CLI takes it (`claude --max-budget-usd`): a
    plain decimal, never `1e-05`; None for anything but a finite number >= 0."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return f"{value:.6f}".rstrip("0").rstrip(".")


def instruction_of(task: Mapping[str, Any]) -> str:
    """`payload.instruction`; a BuildPlan phase has none, so its description and summary."""
    payload = task.get("payload")
    payload = payload if isinstance(payload, dict) else {}
    for text in (payload.get("instruction"), payload.get("description"), task.get("summary")):
        if isinstance(text, str) and text.strip():
            return text.replace("\0", "")
    return ""


def agent_environment(
    base: Mapping[str, str],
    task: Mapping[str, Any],
    task_file: Path,
    result_file: Path,
    usage_file: Path,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The runner's environment without its own settings, the entry's `env`, then every scalar
    payload field as TASK_<KEY> (`budget_remaining_usd` only as a plain number >= 0), then the
    fixed TASK_FILE, TASK_INSTRUCTION, TASK_RESULT_FILE, TASK_USAGE_FILE, TASK_ID and TASK_TYPE
    (these win over a payload key of the same name)."""
    env = {k: v for k, v in base.items() if not k.startswith(DROPPED_PREFIXES)}
    env.update(extra or {})
    payload = task.get("payload")
    if isinstance(payload, dict):
        for key, value in payload.items():
            text = _scalar(value)
            if isinstance(key, str) and key not in (TOKEN_KEY, BUDGET_KEY) and text is not None:
                env[env_name(key)] = text
        budget = budget_text(payload.get(BUDGET_KEY))
        if budget is not None:  # else the entry's `env` may give a default
            env[env_name(BUDGET_KEY)] = budget
    env.pop(env_name(TOKEN_KEY), None)
    env.update(
        TASK_FILE=str(task_file),
        TASK_INSTRUCTION=instruction_of(task),
        TASK_RESULT_FILE=str(result_file),
        TASK_USAGE_FILE=str(usage_file),
        TASK_ID=str(task.get("id", "")).replace("\0", ""),
        TASK_TYPE=str(task.get("task_type", "")).replace("\0", ""),
    )
    return env


def expand(text: str, env: Mapping[str, str]) -> str:
    """`$NAME` and `${NAME}` from `env` (unset: empty, as in a shell); `$$` is a literal `$`.
    Each argument stays one argument whatever it expands to: there is no shell to split it."""

    def sub(match: re.Match[str]) -> str:
        if match.group(3):
            return "$"
        return env.get(match.group(1) or match.group(2), "")

    return _VAR.sub(sub, text)


def expand_command(command: Sequence[str], env: Mapping[str, str]) -> list[str]:
    return [expand(arg, env) for arg in command]
