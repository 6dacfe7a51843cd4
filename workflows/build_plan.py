"""BuildPlanWorkflow: run a plan's phases one after another, each by an agent.

Each phase is one `execute_build_phase` activity: up to two attempts of 24 h. The worker's
settings are read once, by the `pipeline_settings` local activity behind the `plan-settings`
patch, and recorded in the history. With AGENT_HEARTBEAT_TIMEOUT set, a phase whose agent falls
silent for that long is dispatched again, and after two silent attempts the plan fails saying
so. Each phase runs on the host AGENT_HOSTS maps its `agent_type` to, as a pipeline's agent
stages do.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutType
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    import observability  # stdlib-only at import time; its metric calls are replay-safe here
    from activities.build_phase import BuildPhaseActivities
    from activities.build_pipeline_activities import PipelineActivities
    from exceptions import INVALID_INPUT, PHASE_FAILED, STAGE_TIMED_OUT
    from models import (
        AGENT_PATTERN,
        BuildPhaseInput,
        BuildPhaseResult,
        BuildPlanInput,
        BuildPlanResult,
        PipelineSettings,
    )
    from workflows import operator_view
    from workflows.hosts import HOST_UNAVAILABLE, route, unplaced

# Plans started before this patch ran without settings; later ones record them once.
SETTINGS_PATCH = "plan-settings"
SETTINGS_TIMEOUT = timedelta(seconds=10)


@workflow.defn(failure_exception_types=[ValidationError])
class BuildPlanWorkflow:
    def __init__(self) -> None:
        self._settings = PipelineSettings()
        # Under the patch the settings' local activity takes the first activity sequence
        # number; phases then get their ids explicitly, the ones they had before ("1", "2"...).
        self._phase_ids = False
        self._scheduled = 0

    @workflow.run
    async def run(self, plan: BuildPlanInput) -> BuildPlanResult:
        _validate(plan)
        self._phase_ids = workflow.patched(SETTINGS_PATCH)
        if self._phase_ids:
            self._settings = await _settings()
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
        self._scheduled += 1
        where = route(self._settings, workflow.info().task_queue, agent_type)
        try:
            result: BuildPhaseResult = await workflow.execute_activity_method(
                BuildPhaseActivities.execute_build_phase,
                BuildPhaseInput(
                    plan_name=plan.plan_name,
                    phase_number=number,
                    agent_type=agent_type,
                    description=description,
                    context_refs=context_refs,
                    workflow_id=workflow.info().workflow_id,
                ),
                start_to_close_timeout=timedelta(hours=24),
                heartbeat_timeout=self._heartbeat(),
                activity_id=str(self._scheduled) if self._phase_ids else None,
                summary=operator_view.SEP.join(
                    [f"phase {number}", agent_type, " ".join(description.split())[:80]]
                ),
                retry_policy=RetryPolicy(
                    maximum_attempts=2, non_retryable_error_types=[PHASE_FAILED]
                ),
                **where.options,
            )
        except ActivityError as err:
            missing = unplaced(err, where, f"phase {number}")
            if missing:
                _record_phase(started, "timed_out")
                raise ApplicationError(missing, type=HOST_UNAVAILABLE, non_retryable=True) from err
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == PHASE_FAILED:
                _record_phase(started, "failed")
                raise ApplicationError(
                    f"Phase {number} failed: {cause.message}", type=PHASE_FAILED, non_retryable=True
                ) from err
            _record_phase(started, "error")
            if isinstance(cause, ActivityTimeoutError) and cause.type == TimeoutType.HEARTBEAT:
                seconds = self._settings.heartbeat_timeout_seconds
                raise ApplicationError(
                    f"Phase {number} failed: no heartbeat from the {agent_type} agent within "
                    f"{seconds} s",
                    type=STAGE_TIMED_OUT,
                    non_retryable=True,
                ) from err
            raise
        _record_phase(started, "success" if result.status == "success" else "failed")
        return result

    def _heartbeat(self) -> timedelta | None:
        """The heartbeat timeout of this plan's phases, as its history recorded it."""
        seconds = self._settings.heartbeat_timeout_seconds
        return timedelta(seconds=seconds) if seconds else None


async def _settings() -> PipelineSettings:
    """The worker's settings, recorded once in this plan's history."""
    settings: PipelineSettings = await workflow.execute_local_activity_method(
        PipelineActivities.pipeline_settings,
        start_to_close_timeout=SETTINGS_TIMEOUT,
        summary=operator_view.SEP.join(["settings", operator_view.WORKER_STAGES["settings"]]),
    )
    return settings


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
