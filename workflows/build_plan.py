"""BuildPlanWorkflow: run a plan's phases one after another, each by an agent.

Every phase is the stage table's `PHASE` row (`execute_build_phase`, up to two attempts of
24 h), run by the same stage runner as a pipeline's stages, under the name `phase-<n>` and on
the host AGENT_HOSTS maps its `agent_type` to. The worker's settings are read once, by the
`pipeline_settings` local activity behind the `plan-settings` patch, and recorded in the
history. With AGENT_HEARTBEAT_TIMEOUT set, a phase whose agent falls silent for that long is
dispatched again, and after two silent attempts the phase fails saying so.

A plan has a pipeline's operator control: the `status` query, current details in the UI, the
failure hold (FAILURE_HOLD or the input's `failure_hold_seconds`: `retry`, `skip`, `abort`), and
a cancel that closes the plan's open task files. Holds and the cancel's clean-up are new
commands, behind the `plan-control` patch. A failed phase that is not held fails the plan, as
before.
"""

from __future__ import annotations

import asyncio
import re

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    import operator_view
    import workflows.budget as budget
    import workflows.failure_hold as failure_hold
    import workflows.versions as versions
    from activities.build_pipeline_activities import PipelineActivities
    from exceptions import INVALID_INPUT
    from models import (
        AGENT_PATTERN,
        MAX_HOLD_SECONDS,
        BudgetInput,
        BuildPhaseInput,
        BuildPlanInput,
        BuildPlanResult,
        DecisionInput,
        PhaseSpec,
        PipelineStatus,
    )
    from workflows.hosts import HOST_UNAVAILABLE
    from workflows.run_state import RunState
    from workflows.stage_failure import StageFailed
    from workflows.stage_runner import StageRunner, finish_shielded, record_settings
    from workflows.stages import PHASE

CANCELLED = "cancelled"


@workflow.defn(failure_exception_types=[ValidationError])
class BuildPlanWorkflow:
    @workflow.init
    def __init__(self, plan: BuildPlanInput) -> None:
        now = workflow.now().isoformat()
        self._state = RunState(
            name=plan.plan_name,
            target_agent="",
            status=PipelineStatus(
                workflow_id=workflow.info().workflow_id,
                build_name=plan.plan_name,
                stage="start",
                stages_done=[],
                started_at=now,
                updated_at=now,
            ),
            upserts="held",
            hold_patch=versions.PLAN_CONTROL,
        )
        self._stages = StageRunner(self._state)

    # --- operator interface ----------------------------------------------------------------

    @workflow.query
    def status(self) -> PipelineStatus:
        return self._state.status

    @workflow.update
    def retry(self, decision: DecisionInput | None = None) -> str:
        return failure_hold.choose(self._state, "retry", decision)

    @workflow.update
    def skip(self, decision: DecisionInput | None = None) -> str:
        return failure_hold.choose(self._state, "skip", decision)

    @workflow.update
    def abort(self, decision: DecisionInput | None = None) -> str:
        return failure_hold.choose(self._state, "abort", decision)

    @workflow.update
    def raise_budget(self, given: BudgetInput) -> str:
        return budget.raise_to(self._state, given)

    @skip.validator
    def _check_skippable(self, decision: DecisionInput | None = None) -> None:
        failure_hold.check_skippable(self._state)

    @retry.validator
    def _check_held(self, decision: DecisionInput | None = None) -> None:
        failure_hold.check_held(self._state)

    @abort.validator
    def _check_abortable(self, decision: DecisionInput | None = None) -> None:
        failure_hold.check_abortable(self._state)

    @raise_budget.validator
    def _check_raise(self, given: BudgetInput) -> None:
        budget.check_raise(self._state, given)

    # --- the phases ------------------------------------------------------------------------

    @workflow.run
    async def run(self, plan: BuildPlanInput) -> BuildPlanResult:
        _validate(plan)
        state = self._state
        # Under plan-settings the settings' local activity takes the first activity sequence
        # number; phases then get their ids explicitly, the ones they had before ("1", "2"...).
        phase_ids = versions.patched(versions.PLAN_SETTINGS)
        if phase_ids:
            state.settings = await record_settings()
        state.settle(plan)
        done = 0
        try:
            for index, phase in enumerate(plan.phases, start=1):
                if await self._phase(plan, phase, str(index) if phase_ids else None):
                    done += 1
        except (asyncio.CancelledError, ActivityError) as err:
            if not is_cancelled_exception(err) or not versions.patched(versions.PLAN_CONTROL):
                raise
            await finish_shielded(self._close(CANCELLED))
            raise
        self._stages.set_stage("done")
        status = "partial" if state.skipped else "complete"
        reported = {
            k: v.model_dump() for k, v in state.status.usage.items() if v.unknown < v.attempts
        }
        return BuildPlanResult(status=status, phases_run=done, usage=reported or None)

    async def _phase(self, plan: BuildPlanInput, phase: PhaseSpec, activity_id: str | None) -> bool:
        """Run one phase; False when the operator skipped it. A failure fails the plan."""
        number = phase.number
        self._state.target_agent = phase.agent_type
        try:
            result = await self._stages.run(
                PHASE,
                BuildPhaseInput(
                    plan_name=plan.plan_name,
                    phase_number=number,
                    agent_type=phase.agent_type,
                    description=phase.description,
                    context_refs=list(phase.context_refs),
                    workflow_id=workflow.info().workflow_id,
                ),
                stage=f"phase-{number}",
                what=f"the phase {number}",
                summary=operator_view.SEP.join(
                    [f"phase {number}", phase.agent_type, " ".join(phase.description.split())[:80]]
                ),
                activity_id=activity_id,
            )
        except StageFailed as failure:
            self._state.status.outcome, self._state.status.error = "failed", failure.reason
            self._stages.set_stage("failed")
            own_words = failure.error_type == HOST_UNAVAILABLE
            raise ApplicationError(
                failure.reason if own_words else f"Phase {number} failed: {failure.reason}",
                type=failure.error_type,
                non_retryable=True,
            ) from None
        return result is not None

    async def _close(self, outcome: str) -> None:
        """A cancel's clean-up: the plan's open task files closed on every host it used."""
        self._state.status.outcome = outcome
        await self._stages.on_every_host(PipelineActivities.close_pipeline_tasks, outcome)
        self._stages.set_stage(outcome)


def _validate(plan: BuildPlanInput) -> None:
    def refuse(what: str) -> ApplicationError:
        return ApplicationError(f"invalid input: {what}", type=INVALID_INPUT, non_retryable=True)

    if not plan.plan_name.strip():
        raise refuse("plan_name is empty")
    if plan.budget_usd is not None and not plan.budget_usd > 0:
        raise refuse("budget_usd must be more than 0")
    hold = plan.failure_hold_seconds
    if hold is not None and not 0 <= hold <= MAX_HOLD_SECONDS:
        raise refuse(f"failure_hold_seconds must be between 0 and {MAX_HOLD_SECONDS}")
    for i, phase in enumerate(plan.phases):
        if not re.match(AGENT_PATTERN, phase.agent_type):
            raise refuse(f"phases[{i}].agent_type {phase.agent_type!r} must match {AGENT_PATTERN}")
        if not phase.description.strip():
            raise refuse(f"phases[{i}].description is empty")
