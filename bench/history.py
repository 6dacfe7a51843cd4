"""What one run's history holds: its events by type, and the Temporal Cloud actions they bill.

Actions are counted from the history by the rule in bench/README.md ("Billable actions"), which
follows Temporal Cloud's list of actions: a workflow start; each activity attempt; the local
activities of one workflow task together; each timer; each search attribute upsert except one
that only sets TemporalChangeVersion; each signal; each update. What a history does not show
(queries, rejected updates, heartbeats) is left out, for both sides alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent

CHANGE_VERSION = "TemporalChangeVersion"


def tally(events: Sequence[HistoryEvent]) -> dict[str, Any]:
    """Events in one run's history, how many of each type, and its billable actions."""
    kinds: dict[str, int] = {}
    for event in events:
        name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        kinds[name] = kinds.get(name, 0) + 1
    actions = billable_actions(events)
    return {
        "total": len(events),
        "by_type": dict(sorted(kinds.items())),
        "actions": sum(actions.values()),
        "actions_by_kind": actions,
    }


def billable_actions(events: Sequence[HistoryEvent]) -> dict[str, int]:
    """The actions the history shows, by kind."""
    counts = {
        "workflow started": 0,
        "activity attempts": 0,
        "local activities (per workflow task)": 0,
        "timers": 0,
        "search attribute upserts": 0,
        "signals": 0,
        "updates": 0,
    }
    local_in_task = False  # a local activity's marker already counted for this workflow task
    for event in events:
        if event.HasField("workflow_execution_started_event_attributes"):
            counts["workflow started"] += 1
        elif event.HasField("activity_task_started_event_attributes"):
            # the history keeps the last attempt's started event: every attempt is an action
            counts["activity attempts"] += event.activity_task_started_event_attributes.attempt
        elif event.HasField("workflow_task_completed_event_attributes"):
            local_in_task = False
        elif event.marker_recorded_event_attributes.marker_name == "core_local_activity":
            if not local_in_task:
                counts["local activities (per workflow task)"] += 1
                local_in_task = True
        elif event.HasField("timer_started_event_attributes"):
            counts["timers"] += 1
        elif event.HasField("upsert_workflow_search_attributes_event_attributes"):
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            if set(fields.indexed_fields) - {CHANGE_VERSION}:
                counts["search attribute upserts"] += 1
        elif event.HasField("workflow_execution_signaled_event_attributes"):
            counts["signals"] += 1
        elif event.HasField("workflow_execution_update_accepted_event_attributes"):
            counts["updates"] += 1
    return counts
