"""What reached a workflow's activities, read from its history as the server stored it: the
result each completed activity was completed with, and the details each failed one carries.

A BuildPlan phase decodes its result into `BuildPhaseResult`, which has no room for `usage`; the
history has the completion exactly as the agent or the runner sent it.
"""

from __future__ import annotations

import json
from typing import Any

from temporalio.client import WorkflowHandle


async def completions(handle: WorkflowHandle[Any, Any]) -> list[Any]:
    """The JSON result of each ActivityTaskCompleted event, in order."""
    history = await handle.fetch_history()
    return [
        json.loads(event.activity_task_completed_event_attributes.result.payloads[0].data)
        for event in history.events
        if event.HasField("activity_task_completed_event_attributes")
    ]


async def failures(handle: WorkflowHandle[Any, Any]) -> list[tuple[str, list[Any]]]:
    """(message, JSON details) of each ActivityTaskFailed event, in order."""
    history = await handle.fetch_history()
    found = []
    for event in history.events:
        if event.HasField("activity_task_failed_event_attributes"):
            failure = event.activity_task_failed_event_attributes.failure
            details = failure.application_failure_info.details.payloads
            found.append((failure.message, [json.loads(p.data) for p in details]))
    return found
