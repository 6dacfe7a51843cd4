"""What the originating task file says at the block gate: which run is parked on it, which
decision it holds, and at which of the run's waits (pure reads of a loaded task file)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from activities.task_files import ACTOR, DECISIONS, INPUT_REQUIRED, last_entry


def gate_mark(task: Mapping[str, Any]) -> tuple[str, str] | None:
    """(workflow_id, run_id) of the run parked on this task, from the latest input-required
    entry this worker wrote; None when the file carries none (an earlier release wrote it, or a
    tool rewrote it without the keys)."""
    entry = last_entry(task, INPUT_REQUIRED)
    workflow_id, run_id = entry.get("workflow_id"), entry.get("run_id")
    if entry.get("actor") == ACTOR and isinstance(workflow_id, str) and isinstance(run_id, str):
        return workflow_id, run_id
    return None


def file_decision(task: Mapping[str, Any]) -> dict[str, str] | None:
    """The operator's decision in the file: {"decision", "by", "note"} when its status is
    `approved`, `rejected` or `changes-requested` (the status word decides; the history entry
    says who and why, and its `note`, or the file's top-level `note` key, the note)."""
    status = str(task.get("status", ""))
    if status not in DECISIONS:
        return None
    entry = last_entry(task, status)
    return {
        "decision": status,
        "by": str(entry.get("actor", "")),
        "note": str(entry.get("note") or task.get("note") or ""),
    }


def gate_round(task: Mapping[str, Any]) -> int:
    """How many times this worker parked a run on the file (its input-required entries): a
    decision is told apart from one made at an earlier wait of the same run by it."""
    history = task.get("history")
    if not isinstance(history, list):
        return 0
    return sum(
        1
        for e in history
        if isinstance(e, dict) and e.get("status") == INPUT_REQUIRED and e.get("actor") == ACTOR
    )
