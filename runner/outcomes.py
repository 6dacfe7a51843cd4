"""What an agent's run means for its stage: pure functions over the task and the exit status.

The table of cases is in runner/service.py's docstring and docs/OPERATIONS.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import agent_calls
from activities.task_files import COMPLETED, FAILED
from runner.usage import Report
from usage import Usage

MAX_OUTPUT_CHARS = 10_000
FAILURE_LINES = 5


@dataclass(frozen=True)
class Outcome:
    """How a run ended: the file's final status and note, and what the stage is told."""

    status: str  # COMPLETED, FAILED or CANCELLED
    note: str
    deliver: str  # "complete", "fail", "none", or "leave": stays in-progress for a restart
    output: str | None = None
    usage: Usage | None = None  # what the run cost, when known: it travels with the outcome


def token_of(task: Mapping[str, Any]) -> bytes | None:
    payload = task.get("payload")
    text = payload.get("task_token") if isinstance(payload, dict) else None
    if not isinstance(text, str):
        return None
    try:
        return agent_calls.decode_token(text.strip())
    except agent_calls.AgentCallError:
        return None


def heartbeat_interval(task: Mapping[str, Any], default: float) -> float:
    payload = task.get("payload")
    value = payload.get("heartbeat_seconds") if isinstance(payload, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return default


def exit_outcome(code: int, agent: str, result_text: str, last: list[str]) -> Outcome:
    """What the agent's exit status means for its stage."""
    if code == 0:
        output = (result_text.strip() or (last[-1] if last else ""))[:MAX_OUTPUT_CHARS]
        return Outcome(COMPLETED, f"agent {agent} exited 0", "complete", output)
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    tail = " | ".join(last[-FAILURE_LINES:]) or "no output"
    return Outcome(FAILED, f"agent {agent} {how}; last output: {tail}"[:MAX_OUTPUT_CHARS], "fail")


def run_outcome(
    code: int, agent: str, result_text: str, last: list[str], report: Report, usage: Usage | None
) -> Outcome:
    """What a finished run means, its output read as declared: an error result fails the stage
    whatever the exit status; otherwise the exit status decides, and the final text of the
    output stands in for the last line (the result file still comes first). `usage` goes with
    either."""
    if report.error is not None:
        said = f": {report.text.strip()[:500]}" if report.text and report.text.strip() else ""
        note = f"agent {agent} ended with an error result, {report.error}{said}"
        return Outcome(FAILED, note[:MAX_OUTPUT_CHARS], "fail", usage=usage)
    text = result_text.strip() or (report.text or "")
    return replace(exit_outcome(code, agent, text, last), usage=usage)
