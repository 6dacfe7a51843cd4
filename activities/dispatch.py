"""The one way a stage hands work to an agent: write its task file, then wait for the agent.

Shared by every agent stage of both workflows so they differ only in what the file says. When
the workflow scheduled the stage with a heartbeat timeout, the file also tells the agent how
often to heartbeat (`heartbeat_seconds`) and how; without one it is exactly the original's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from temporalio import activity

import observability
from activities import instructions, task_files
from activities.triage import sanitize_finding
from models import dispatch_number, dispatch_task_id


async def dispatch_to_agent(
    queue_dir: Path,
    *,
    stage: str,
    target_agent: str,
    task_type: str,
    summary: str,
    payload: Mapping[str, Any],
    history_note: str | None = None,
    operator_note: str = "",
    log_event: str,
    **log_fields: Any,
) -> NoReturn:
    """Write the task file for this attempt and leave the activity open for the agent."""
    info = activity.info()
    workflow_id, run_id = info.workflow_id or "", info.workflow_run_id or ""
    number = dispatch_number(stage, info.activity_id, info.attempt)
    task_id = dispatch_task_id(workflow_id, run_id, stage, number)
    earlier = {dispatch_task_id(workflow_id, run_id, stage, n) for n in range(1, number)}
    now = task_files.now_utc()
    log = observability.activity_logger()
    if info.heartbeat_timeout:
        payload = {
            **payload,
            "heartbeat_seconds": instructions.heartbeat_seconds(info.heartbeat_timeout),
            "instruction": instructions.with_heartbeat(
                str(payload["instruction"]), info.heartbeat_timeout
            ),
        }
    if operator_note:  # the operator's retry: the note, sanitised like a finding, as data
        note = sanitize_finding(operator_note)
        payload = {
            **payload,
            "operator_note": note,
            "instruction": instructions.with_operator_note(str(payload["instruction"]), note),
        }

    def write(task: Mapping[str, Any]) -> tuple[Path, list[Path]]:
        stale: list[Path] = []
        if earlier:
            stale = task_files.supersede_earlier_attempts(queue_dir, workflow_id, earlier, number)
        return task_files.write_task(queue_dir, task, now), stale

    with observability.dispatch_span(
        activity_name=info.activity_type,
        stage=stage,
        task_type=task_type,
        task_id=task_id,
        **log_fields,
    ):
        # built inside the span: the file's traceparent names it, so the agent's completion
        # is a child of this dispatch
        task = task_files.build_task(
            task_id=task_id,
            created=now,
            target_agent=target_agent,
            task_type=task_type,
            summary=summary,
            payload={
                **payload,
                "workflow_id": workflow_id,
                "activity_id": info.activity_id,
                "attempt": info.attempt,
                **observability.trace_fields(),
            },
            task_token=task_files.encode_token(info.task_token),
            history_note=history_note,
        )
        path, stale = await asyncio.to_thread(write, task)
    for old in stale:
        log.info("task_superseded", file=old.name)
    log.info(log_event, task_id=task_id[:8], file=path.name, **log_fields)
    observability.count_dispatch(task_type)
    activity.raise_complete_async()
