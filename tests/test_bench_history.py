"""bench/history.py: events and Temporal Cloud actions counted from recorded histories whose
shape the pipeline fixes (which activities ran, what waited, what was upserted)."""

from __future__ import annotations

import pytest

from bench.history import tally
from tests.helpers.histories import HISTORIES, load

pytestmark = pytest.mark.unit


def test_a_clean_run_without_blocks() -> None:
    counted = tally(load(HISTORIES / "pipeline_no_findings_fewer_events.json").events)
    assert counted["actions_by_kind"] == {
        "workflow started": 1,
        # prefab, implement, audit, triage, close, summary
        "activity attempts": 6,
        # the settings, read in the first workflow task
        "local activities (per workflow task)": 1,
        "timers": 0,
        # BuildStage 'done'; the SDK's TemporalChangeVersion upsert is not billed
        "search attribute upserts": 1,
        "signals": 0,
        "updates": 0,
    }
    assert counted["actions"] == 9
    assert counted["by_type"]["UPSERT_WORKFLOW_SEARCH_ATTRIBUTES"] == 2
    assert counted["total"] == sum(counted["by_type"].values())


def test_a_run_approved_by_update_at_the_gate() -> None:
    counted = tally(load(HISTORIES / "pipeline_blocks_update_approval_fewer_events.json").events)
    assert counted["actions_by_kind"] == {
        "workflow started": 1,
        # prefab, implement, audit, triage, notify, close, summary
        "activity attempts": 7,
        # the settings, and the gate's check of its file in a workflow task of its own
        "local activities (per workflow task)": 2,
        # the wait for the next check, cancelled by the approval
        "timers": 1,
        # BuildStage 'awaiting-approval', 'close', 'done'
        "search attribute upserts": 3,
        "signals": 0,
        "updates": 1,
    }


def test_every_attempt_of_an_activity_counts() -> None:
    """A phase dispatched again after its agent fell silent: its started event carries the
    attempt, and each attempt is billed."""
    counted = tally(load(HISTORIES / "plan_heartbeat_timeout.json").events)
    started = counted["by_type"]["ACTIVITY_TASK_STARTED"]
    assert counted["actions_by_kind"]["activity attempts"] > started
