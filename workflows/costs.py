"""What a run's agents cost: the usage their completions carry, summed per stage over its
attempts (retries, reruns, review rounds) and over the run.

A completion without usage (the original's agents, `temporal activity complete`) counts as an
attempt of unknown cost, never as zero. Pure bookkeeping on the run's state, and the metrics
`agent.cost_usd` and `agent.tokens` (replay-safe from workflow code).
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    import observability  # stdlib-only at import time; its metric calls are replay-safe here
    from models import StageUsage
    from usage import COUNTS, Usage, UsageError, check_usage
    from workflows.run_state import RunState

TOKENS = {"input_tokens": "input", "output_tokens": "output", "cache_read_tokens": "cache_read"}


def of_result(raw: Any) -> Usage | None:
    """The usage of a completion (`{"status": ..., "output": ..., "usage": {...}}`), if any."""
    return _checked(raw.get("usage")) if isinstance(raw, dict) else None


def of_failure(err: ActivityError) -> Usage | None:
    """The usage a failed completion carries as its one detail, `{"usage": {...}}`."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.details:
        first = cause.details[0]
        return _checked(first.get("usage")) if isinstance(first, dict) else None
    return None


def _checked(value: Any) -> Usage | None:
    if value is None:
        return None
    try:
        return check_usage(value) or None
    except UsageError:  # what no agent of ours sends: unknown, as if absent
        return None


def record(state: RunState, stage: str, agent: str, metric_stage: str, usage: Usage | None) -> None:
    """One attempt of `stage` ended, costing `usage` (None: unknown)."""
    row = state.status.usage.setdefault(stage, StageUsage())
    row.attempts += 1
    if usage is None:
        row.unknown += 1
        return
    row.cost_usd += usage.get("cost_usd", 0.0)
    for key in COUNTS:
        setattr(row, key, getattr(row, key) + usage.get(key, 0))
    state.status.cost_usd = spent(state)
    observability.record_agent_usage(
        agent,
        metric_stage,
        usage.get("cost_usd"),
        {kind: usage[key] for key, kind in TOKENS.items() if key in usage},  # type: ignore[literal-required]
    )


def spent(state: RunState) -> float:
    """What the run's agents reported they spent so far (known usage only)."""
    return sum(row.cost_usd for row in state.status.usage.values())


def remaining(state: RunState) -> float | None:
    budget = state.status.budget_usd
    return None if budget is None else max(budget - spent(state), 0.0)
