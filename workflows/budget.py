"""A budget that parks the run before it overspends.

With a budget (the input's `budget_usd`, or PIPELINE_BUDGET_USD), each agent stage's task file
carries what is left, and once what the agents reported reaches the budget no further agent
stage is dispatched: the run parks at `awaiting-budget` with one notification, until
`raise_budget` (above what was spent) lets it go on, `abort` ends it, or the failure hold's time
runs out (at once when there is no hold), ending it `over_budget`. Helpers over the run's state,
as the failure hold's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    import operator_view
    import workflows.costs as costs
    import workflows.versions as versions
    import workflows.waiting as waiting
    from activities.hold import WaitActivities
    from exceptions import OVER_BUDGET
    from models import BudgetInput, DecisionInput
    from workflows.run_state import RunState
    from workflows.stage_failure import StageFailed
    from workflows.stages import AWAITING_BUDGET, THREE_TRIES

if TYPE_CHECKING:
    from workflows.stage_runner import StageRunner

NOTIFY_TIMEOUT = timedelta(minutes=2)


def check_raise(state: RunState, given: BudgetInput) -> None:
    if not state.budget_parked or state.budget_choice is not None:
        raise ValueError(f"no run is waiting for its budget (stage: {state.status.stage})")
    spent = costs.spent(state)
    if given.budget_usd <= spent:
        raise ValueError(
            f"the new budget ${given.budget_usd:.2f} is not above what was spent "
            f"(${spent:.2f}): raise it above that, or abort"
        )


def raise_to(state: RunState, given: BudgetInput) -> str:
    state.budget_choice = ("raise", DecisionInput(note=given.note, by=given.by))
    state.status.budget_usd = given.budget_usd
    return f"budget raised to ${given.budget_usd:.2f}"


async def ensure(runner: StageRunner, stage: str) -> None:
    """Before an agent stage is dispatched: park when the budget is spent."""
    state = runner.state
    budget = state.status.budget_usd
    spent = costs.spent(state)
    if budget is None or spent < budget:
        return
    if not versions.patched(versions.BUDGET):  # budgets came with it: never reached without
        return
    state.budget_parked, state.budget_choice = True, None
    state.budget_parks += 1
    runner.set_stage(AWAITING_BUDGET)
    given = [c for _, c in operator_view.budget_commands(workflow.info().workflow_id)]
    try:
        await workflow.execute_activity_method(
            WaitActivities.notify_budget,
            args=[state.name, spent, budget, given, f"budget-{state.budget_parks}"],
            start_to_close_timeout=NOTIFY_TIMEOUT,
            retry_policy=THREE_TRIES,
            **runner.notifier_options(),
        )
    except ActivityError as err:  # best effort, as every notification
        if is_cancelled_exception(err):
            raise
    reason = f"its agents spent ${spent:.2f} of its ${budget:.2f} budget"
    try:
        if state.hold_seconds > 0:
            await waiting.wait(
                runner,
                waiting.Wait(
                    waits_for=f"a budget decision ({reason})",
                    limit=timedelta(seconds=state.hold_seconds),
                    decided=lambda: state.budget_choice is not None,
                    commands=given,
                    timeout_summary="no decision on the spent budget",
                ),
            )
    except TimeoutError:
        pass
    finally:
        state.budget_parked = False
    choice = state.budget_choice
    if choice is None:
        waited = (
            f"; no decision came within the {state.hold_seconds:g}s hold"
            if state.hold_seconds > 0
            else "; no failure hold waits for a raise (FAILURE_HOLD)"
        )
        raise StageFailed(stage, error_type=OVER_BUDGET, reason=reason + waited)
    if choice[0] == "abort":
        note = f": {choice[1].note}" if choice[1].note else ""
        raise StageFailed(
            stage,
            error_type=OVER_BUDGET,
            reason=f"{reason}; aborted by {choice[1].by or 'the operator'}{note}",
        )
