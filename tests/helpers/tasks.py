"""A task file as the worker builds it, at a fixed time, for the task-file tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from activities import task_files

NOW = datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)


TASK_ID = "3f2a9c1b-7d4e-4c1a-9b2f-0e8d7c6b5a49"


TOKEN = "Q2lRd1pXeHNiM2M9"


# Every key of a task file.
SPEC_KEYS = {
    "id",
    "created",
    "source_agent",
    "target_agent",
    "task_type",
    "risk_level",
    "requires_approval",
    "status",
    "summary",
    "ttl_days",
    "payload",
    "result",
    "history",
}


# The keys each task file gets values of its own for: an id, a time, a token, a history.
PER_TASK_KEYS = {"id", "created", "payload", "history"}


def make_task(
    task_id: str = TASK_ID,
    *,
    summary: str = "Build phase 1: scaffold",
    payload: dict[str, Any] | None = None,
    history_note: str | None = None,
    token: str = TOKEN,
) -> dict[str, Any]:
    return task_files.build_task(
        task_id=task_id,
        created=NOW,
        target_agent="dev",
        task_type="build_phase",
        summary=summary,
        payload={"plan_name": "demo"} if payload is None else payload,
        task_token=token,
        history_note=history_note,
    )
