"""The failure hold: a failed stage parks for the operator's `retry`, `skip` or `abort`, or until
the hold ends.

Helpers over the run's state: the workflows declare the updates and call `check_held`,
`check_skippable` and `choose` from them; the stage runner calls `hold` when a stage fails.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    import operator_view
    import workflows.versions as versions
    import workflows.waiting as waiting
    from activities.hold import HoldActivities
    from models import DecisionInput
    from workflows.run_state import RunState
    from workflows.stage_failure import StageFailed
    from workflows.stages import THREE_TRIES

if TYPE_CHECKING:
    from workflows.stage_runner import StageRunner

NOTIFY_TIMEOUT = timedelta(minutes=2)


def check_held(state: RunState) -> str:
    """The held stage; refuses (ValueError, a refused update) when none waits for a decision."""
    if state.held is None or state.choice is not None:
        stage = state.status.stage
        raise ValueError(f"no failed stage is awaiting retry, skip or abort (stage: {stage})")
    return state.held.stage


def check_skippable(state: RunState) -> None:
    stage = check_held(state)
    if not state.held_skippable:
        raise ValueError(
            f"the {stage} stage cannot be skipped: the security gate "
            "cannot be bypassed (retry or abort)"
        )


def check_abortable(state: RunState) -> None:
    """`abort` ends a held stage, or a run parked at its budget."""
    if not (state.budget_parked and state.budget_choice is None):
        check_held(state)


def choose(state: RunState, choice: str, given: DecisionInput | None) -> str:
    if state.budget_parked:  # the validator let only abort through
        state.budget_choice = (choice, given or DecisionInput())
        return f"{choice} at the budget"
    assert state.held is not None  # the update's validator refused it otherwise
    state.choice = (choice, given or DecisionInput())
    return f"{choice} {state.held.stage}"


async def hold(
    runner: StageRunner, failure: StageFailed, skippable: bool
) -> tuple[str, DecisionInput]:
    """Park a failed stage until the operator decides or the hold ends; returns
    ("retry" | "skip", the operator's input), or raises the stage's failure."""
    state = runner.state
    state.held, state.held_skippable, state.choice = failure, skippable, None
    state.holds += 1
    state.status.failed_stage, state.status.failed_error = failure.stage, failure.reason
    runner.set_stage("awaiting-retry")
    # runs started before this patch sent it from any worker of the workflow's queue
    where = runner.notifier_options() if versions.patched(versions.HOLD_NOTIFY_DISPATCHER) else {}
    args = [
        workflow.info().workflow_id,
        state.name,
        failure.stage,
        failure.reason,
        state.hold_seconds,
        state.holds,
        skippable,
    ]
    if state.audit_round > 1:  # from round 2 on, the message names the round
        args.append(state.round_label())
    try:
        await workflow.execute_activity_method(
            HoldActivities.notify_hold,
            args=args,
            start_to_close_timeout=NOTIFY_TIMEOUT,
            retry_policy=THREE_TRIES,
            **where,
        )
    except ActivityError as err:  # best effort, as every notification
        if is_cancelled_exception(err):
            raise
    limit = timedelta(seconds=state.hold_seconds)
    summary = f"no decision on the failed {failure.stage} stage"
    try:
        # reminders came with DECISION_WAITS; without any, the hold is the one timer it was
        if state.reminders and versions.patched(versions.DECISION_WAITS):
            commands = operator_view.hold_commands(workflow.info().workflow_id, skippable)
            await waiting.wait(
                runner,
                waiting.Wait(
                    waits_for=f"retry, skip or abort of the failed {failure.stage} stage",
                    limit=limit,
                    decided=lambda: state.choice is not None,
                    commands=[command for _, command in commands],
                    timeout_summary=summary,
                ),
            )
        else:
            await workflow.wait_condition(
                lambda: state.choice is not None, timeout=limit, timeout_summary=summary
            )
    except TimeoutError:
        state.choice = ("expired", DecisionInput())
    state.held = None
    assert state.choice is not None
    choice, given = state.choice
    if choice == "expired":
        raise StageFailed(
            failure.stage,
            error_type=failure.error_type,
            reason=f"{failure.reason}; no decision came within the {state.hold_seconds:g}s hold",
        )
    if choice == "abort":
        note = f": {given.note}" if given.note else ""
        raise StageFailed(
            failure.stage,
            error_type=failure.error_type,
            reason=f"{failure.reason}; aborted by {given.by or 'the operator'}{note}",
        )
    state.status.failed_stage = state.status.failed_error = ""
    if choice == "skip":
        state.status.skipped = [*state.skipped, failure.stage]
    return choice, given
