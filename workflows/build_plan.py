"""BuildPlanWorkflow: run a plan's phases one after another, each by an agent."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    import observability  # stdlib-only at import time; its metric calls are replay-safe here
    from exceptions import INVALID_INPUT, PHASE_FAILED
    from models import (
        AGENT_PATTERN,
        BuildPhaseInput,
        BuildPhaseResult,
        BuildPlanInput,
        BuildPlanResult,
    )



@workflow.defn(failure_exception_types=[ValidationError])
class BuildPlanWorkflow:
    @workflow.run
    async def run(self, plan: BuildPlanInput) -> BuildPlanResult:
        _validate(plan)
        for phase in plan.phases:
            result = await self._run_phase(
                plan, phase.number, phase.agent_type, phase.description, list(phase.context_refs)
            )
            if result.status != "success":
                raise ApplicationError(
                    f"Phase {phase.number} failed: {result.output}",
                    type=PHASE_FAILED,
                    non_retryable=True,
                )
        return BuildPlanResult(status="complete", phases_run=len(plan.phases))

    async def _run_phase(
        self,
        plan: BuildPlanInput,
        number: int,
        agent_type: str,
        description: str,
        context_refs: list[str],
    ) -> BuildPhaseResult:
        started = workflow.now()
        try:
            result: BuildPhaseResult = await workflow.execute_activity(
                "execute_build_phase",
                BuildPhaseInput(
                    plan_name=plan.plan_name,
                    phase_number=number,
                    agent_type=agent_type,
                    description=description,
                    context_refs=context_refs,
                    workflow_id=workflow.info().workflow_id,
                ),
                result_type=BuildPhaseResult,
                start_to_close_timeout=timedelta(hours=24),
                retry_policy=RetryPolicy(
                    maximum_attempts=2, non_retryable_error_types=[PHASE_FAILED]
                ),
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == PHASE_FAILED:
                _record_phase(started, "failed")
                raise ApplicationError(
                    f"Phase {number} failed: {cause.message}", type=PHASE_FAILED, non_retryable=True
                ) from err
            _record_phase(started, "error")
            raise
        _record_phase(started, "success" if result.status == "success" else "failed")
        return result


def _record_phase(started: datetime, outcome: str) -> None:
    """Stage metrics for one phase; the stage label is "phase", never its number or plan."""
    observability.record_stage("phase", (workflow.now() - started).total_seconds(), outcome)


def _validate(plan: BuildPlanInput) -> None:
    if not plan.plan_name.strip():
        raise ApplicationError(
            "invalid input: plan_name is empty", type=INVALID_INPUT, non_retryable=True
        )
    for i, phase in enumerate(plan.phases):
        if not re.match(AGENT_PATTERN, phase.agent_type):
            raise ApplicationError(
                f"invalid input: phases[{i}].agent_type {phase.agent_type!r} must match "
                f"{AGENT_PATTERN}",
                type=INVALID_INPUT,
                non_retryable=True,
            )
        if not phase.description.strip():
            raise ApplicationError(
                f"invalid input: phases[{i}].description is empty",
                type=INVALID_INPUT,
                non_retryable=True,
            )
