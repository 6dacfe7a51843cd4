"""Review loops: the audit rounds of a pipeline, and the operator's `request_changes` and
`rerun`, with their refusals.

Helpers over the run's state, as the failure hold's: the workflow declares the updates and calls
these from them; each check raises ValueError, which refuses the update before it reaches the
history. A round is one audit and its triage; rounds are bounded by the run's
`max_rounds` (MAX_AUDIT_ROUNDS or the input's `max_audit_rounds`).
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    import workflows.versions as versions
    from activities.build_pipeline_activities import PipelineActivities
    from models import (
        DecisionInput,
        RerunInput,
        ReviewRound,
        RoundTrigger,
        TriageOutput,
        dispatch_task_id,
    )
    from workflows.run_state import RunState
    from workflows.stage_failure import StageFailed
    from workflows.stage_runner import StageRunner
    from workflows.stages import AUDIT, RERUNNABLE

# Re-running audit or a stage before it audits again: it is a new round.
AUDITED_AGAIN = tuple(row.name for row in RERUNNABLE[: RERUNNABLE.index(AUDIT) + 1])


def rounds_left(state: RunState) -> bool:
    return state.audit_round < state.max_rounds


def check_changes_allowed(state: RunState) -> None:
    """`request_changes` is one more round: refused at the cap."""
    if not rounds_left(state):
        raise ValueError(
            f"the audit round cap is reached ({state.audit_round} of {state.max_rounds}): "
            "request_changes is refused; approve, reject, or rerun remain"
        )


def check_rerun(state: RunState, request: RerunInput) -> None:
    """A rerun goes back to an agent stage that has run, from the gate or a hold."""
    parked = (state.awaiting and state.decision is None and state.rerun is None) or (
        state.held is not None and state.choice is None
    )
    if not parked:
        raise ValueError(
            f"no pipeline is parked at the gate or in a failure hold (stage: "
            f"{state.status.stage}): rerun is possible only there"
        )
    names = [row.name for row in RERUNNABLE]
    ran = [name for name in names if state.dispatches.get(name)]
    if request.stage not in names:
        raise ValueError(
            f"{request.stage!r} cannot be rerun: rerun takes an agent stage that has run "
            f"({', '.join(ran)}); close and summary run only after the gate"
        )
    if request.stage not in ran:
        raise ValueError(
            f"the {request.stage} stage has not run: rerun takes one of {', '.join(ran)}"
        )
    if request.stage in AUDITED_AGAIN and not rounds_left(state):
        raise ValueError(
            f"rerunning {request.stage} would be audit round {state.audit_round + 1}, past the "
            f"cap of {state.max_rounds}: rerun fixes, approve, reject or abort"
        )


def ask_rerun(state: RunState, request: RerunInput) -> str:
    """The accepted `rerun`: at the gate it ends the wait, in a hold it is the hold's choice."""
    state.rerun = request
    if state.held is not None:
        state.choice = ("rerun", DecisionInput(note=request.note, by=request.by))
    return f"rerun from {request.stage}"


def ensure_loops(state: RunState, what: str) -> None:
    """Review loops came with REVIEW_LOOPS: a run without its marker never looped."""
    if not versions.patched(versions.REVIEW_LOOPS):
        raise StageFailed(state.status.stage, reason=f"{what} needs a run started on newer code")


async def supersede_from(runner: StageRunner, stage: str) -> None:
    """A rerun redoes the stages from `stage` on: their earlier task files are superseded, on
    every host they were written on."""
    state, info = runner.state, workflow.info()
    ensure_loops(state, f"rerun from {stage}")
    names = [row.name for row in RERUNNABLE]
    ids = [
        dispatch_task_id(info.workflow_id, info.run_id, name, n)
        for name in names[names.index(stage) :]
        for n in range(1, state.dispatches.get(name, 0) + 1)
    ]
    note = f"Superseded: the operator reran the pipeline from {stage}"
    await runner.on_every_host(PipelineActivities.supersede_stage_tasks, ids, note)


def start_round(
    state: RunState, trigger: RoundTrigger, by: str = "", note: str = "", stage: str = ""
) -> int:
    """Open the next audit round (from round 2 on, a review loop); returns its number."""
    if state.rounds:
        ensure_loops(state, trigger)
    state.rounds.append(
        ReviewRound(round=len(state.rounds) + 1, trigger=trigger, by=by, note=note, stage=stage)
    )
    state.status.audit_round, state.status.rounds = state.audit_round, state.rounds
    return state.audit_round


def found(state: RunState, triage: TriageOutput) -> None:
    """What this round's triage found."""
    state.triage = triage
    state.rounds[-1].blocks, state.rounds[-1].flags = list(triage.blocks), list(triage.flags)
    state.status.blocks, state.status.flags = triage.blocks, triage.flags
