"""Every `workflow.patched` id of the project's workflows: when it came, what runs without its
marker do, and when its old branch may go.

Workflow code asks `patched(ID)` here, never `workflow.patched` directly, so an id that is not
listed fails at once. A patch's life (docs/DESIGN.md, "Versioned behaviour"): added with both
branches; `deprecated` once no open run lacks its marker, so `patched` then calls
`workflow.deprecate_patch` and the old branch is dead code; removed (id and branch) once no open
run was started before it was deprecated. tests/test_versions.py replays recorded histories with
and without each marker.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import workflow


@dataclass(frozen=True)
class Patch:
    id: str
    added: str  # the day it shipped
    workflows: tuple[str, ...]  # the workflow types that ask for it
    old_branch: str  # what a run without the marker does
    deprecate_when: str
    deprecated: bool = False
    # False when no run without the marker can reach the call: it guards commands that only a
    # feature introduced with it issues (an update or setting that did not exist before)
    reached_without_marker: bool = True
    # Earlier patches a run with this marker takes the new branch of without asking: it started
    # on code that had them all, so it records one marker instead of one each
    implies: tuple[str, ...] = ()


PIPELINE_SETTINGS = "pipeline-settings"
PLAN_SETTINGS = "plan-settings"
CANCEL_CLEANUP = "cancel-cleanup"
HOLD_NOTIFY_DISPATCHER = "hold-notify-dispatcher"
END_SHIELDED = "end-shielded"
PLAN_CONTROL = "plan-control"
REVIEW_LOOPS = "review-loops"
DECISION_WAITS = "decision-waits"
BUDGET = "budget"
FEWER_EVENTS = "fewer-events"

# No open pipeline or plan started before the day: `temporal workflow list --query
# "ExecutionStatus='Running' AND StartTime < '<day>'"` lists none.
_NONE_OPEN = "no run started before {day} is open"

PATCHES = {
    p.id: p
    for p in (
        Patch(
            PIPELINE_SETTINGS,
            "2026-12-01",
            ("BuildPipelineWorkflow",),
            "reads the worker's process state (Features) for its settings: the BuildStage "
            "search attribute switch only, no hosts, hold or heartbeat timeout",
            _NONE_OPEN.format(day="2026-12-01"),
        ),
        Patch(
            PLAN_SETTINGS,
            "2026-12-01",
            ("BuildPlanWorkflow",),
            "runs without settings (no heartbeat timeout, no hosts) and lets Temporal number "
            "its phases' activities",
            _NONE_OPEN.format(day="2026-12-01"),
        ),
        Patch(
            CANCEL_CLEANUP,
            "2026-12-01",
            ("BuildPipelineWorkflow",),
            "a cancel during a stage fails that stage, and the failure path ends the run FAILED "
            "('<stage> failed: Cancelled'); a cancel while no stage runs ends it CANCELED at "
            "once, with no summary or clean-up",
            _NONE_OPEN.format(day="2026-12-01"),
        ),
        Patch(
            HOLD_NOTIFY_DISPATCHER,
            "2026-12-02",
            # plans hold since plan-control, always on the new branch
            ("BuildPipelineWorkflow", "BuildPlanWorkflow"),
            "sends a failure hold's [HELD] notification from any worker of the run's queue",
            _NONE_OPEN.format(day="2026-12-02"),
        ),
        Patch(
            END_SHIELDED,
            "2026-12-02",
            ("BuildPipelineWorkflow",),
            "a cancel that arrives while a failure, reject or gate timeout is being wound up "
            "cuts the ending short",
            _NONE_OPEN.format(day="2026-12-02"),
        ),
        Patch(
            PLAN_CONTROL,
            "2026-12-06",
            ("BuildPlanWorkflow",),
            "a failed phase fails the plan at once (no failure hold), and a cancel ends it "
            "CANCELED leaving its open task files as they were",
            _NONE_OPEN.format(day="2026-12-06"),
        ),
        Patch(
            REVIEW_LOOPS,
            "2026-12-06",
            ("BuildPipelineWorkflow",),
            "none reached: a run without the marker never requested changes, reran a stage or "
            "verified fixes (request_changes, rerun and VERIFY_FIXES came with it); were one "
            "replayed there, its stage would fail saying so",
            _NONE_OPEN.format(day="2026-12-06"),
            reached_without_marker=False,
        ),
        Patch(
            DECISION_WAITS,
            "2026-12-06",
            ("BuildPipelineWorkflow", "BuildPlanWorkflow"),
            "the block gate checks its file by one activity whose 'not yet' the server retries "
            "(shown as failed attempts), and no wait sends reminders",
            _NONE_OPEN.format(day="2026-12-06"),
        ),
        Patch(
            BUDGET,
            "2026-12-06",
            ("BuildPipelineWorkflow", "BuildPlanWorkflow"),
            "none reached: a run without the marker had no budget (budget_usd and "
            "PIPELINE_BUDGET_USD came with it), so it never parked at one",
            _NONE_OPEN.format(day="2026-12-06"),
            reached_without_marker=False,
        ),
        Patch(
            FEWER_EVENTS,
            "2026-12-06",
            ("BuildPipelineWorkflow",),
            "upserts BuildStage at every stage, records one marker per earlier patch it asks "
            "for, and races each check of the gate's file with a timer",
            _NONE_OPEN.format(day="2026-12-06"),
            implies=(
                PIPELINE_SETTINGS,
                CANCEL_CLEANUP,
                HOLD_NOTIFY_DISPATCHER,
                END_SHIELDED,
                REVIEW_LOOPS,
                DECISION_WAITS,
                BUDGET,
            ),
        ),
    )
}
# id -> the later patches that imply it
IMPLIED_BY = {
    earlier: tuple(p for p in PATCHES.values() if earlier in p.implies) for earlier in PATCHES
}


def patched(patch_id: str) -> bool:
    """`workflow.patched` for a listed id (KeyError for any other), True without a marker of
    its own when a later patch that implies it is in the run.

    A workflow asks an implying patch first thing in its run, so the SDK settles its answer
    there, once: a run started before it keeps asking the earlier ids all its life, even when
    it goes on under the new code.
    """
    patch = PATCHES[patch_id]
    kind = workflow.info().workflow_type
    if any(kind in later.workflows and _ask(later) for later in IMPLIED_BY[patch_id]):
        return True
    return _ask(patch)


def _ask(patch: Patch) -> bool:
    if patch.deprecated:
        workflow.deprecate_patch(patch.id)
        return True
    return workflow.patched(patch.id)
