"""How BuildPipelineWorkflow runs one stage: its host, its task id, its UI summary and details,
the failure hold around it, and the stage's metrics.

A base class of the workflow, so the workflow module reads like the stage table; nothing here
schedules a command of its own beyond the stages the workflow asks for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    import observability  # stdlib-only at import time; its metric calls are replay-safe here
    from activities.build_pipeline_activities import PipelineActivities
    from exceptions import PHASE_FAILED, STAGE_TIMED_OUT
    from models import (
        AUDIT_AGENT,
        DISPATCHER,
        PREFAB_AGENT,
        BuildPhaseResult,
        BuildPipelineInput,
        Features,
        PipelineSettings,
        PipelineStatus,
        Resolution,
        dispatch_task_id,
        retry_activity_id,
    )
    from workflows import operator_view
    from workflows.failure_hold import FailureHold
    from workflows.hosts import HOST_UNAVAILABLE, Route, on_host, route
    from workflows.stage_failure import StageFailed, read_agent_result

# Stages the worker runs itself (triage, summary, the failure path's clean-up) read or write a
# few local files: an attempt lost with a killed worker is retried after this, not after the
# original's 30-60 min. notify_blocks heartbeats after each message instead (each send is
# capped at 15 s), so its 30 min bound stays for many blocks.
LOCAL_STAGE_TIMEOUT = timedelta(minutes=2)
AGENT_STAGES = ("prefab", "implement", "audit", "fixes", "close")

# Positional arguments of each agent stage's activity before its trailing `operator_note`.
_AGENT_ARGS = {"prefab": 2, "implement": 4, "audit": 2, "fixes": 3, "close": 2}

# An activity, by method reference: its registered name and result type come from it.
Activity = Callable[..., Awaitable[Any]]

SUMMARY_PHASES = ("prefab", "implement", "audit", "triage", "fixes", "close")

# Pipelines started before this patch read the worker's process state for their settings; later
# ones record them once, from the `pipeline_settings` local activity.
SETTINGS_PATCH = "pipeline-settings"
SETTINGS_TIMEOUT = timedelta(seconds=10)

# Stages whose failure a hold parks (the summary's and the gate's failures end at once).
HOLD_STAGES = ("prefab", "implement", "audit", "triage", "fixes", "notify", "close")

METRIC_OUTCOME = {
    PHASE_FAILED: "failed",
    STAGE_TIMED_OUT: "timed_out",
    HOST_UNAVAILABLE: "timed_out",
}

AGENT_RETRY = RetryPolicy(maximum_attempts=1, non_retryable_error_types=[PHASE_FAILED])

BUILD_STAGE = SearchAttributeKey.for_keyword("BuildStage")


class StageRunner(FailureHold):
    """The workflow's state that the stage runner reads; the workflow's `__init__` sets it."""

    _build: BuildPipelineInput
    _status: PipelineStatus
    _decision: Resolution | None
    _awaiting: bool
    _phases: list[str]
    _settings: PipelineSettings
    _origin_path: str
    _route: Route
    _hosts_used: set[str]

    # --- helpers ---------------------------------------------------------------------------

    async def _load_settings(self) -> PipelineSettings:
        if not workflow.patched(SETTINGS_PATCH):
            return PipelineSettings(stage_search_attribute=Features.stage_search_attribute)
        settings: PipelineSettings = await workflow.execute_local_activity_method(
            PipelineActivities.pipeline_settings,
            start_to_close_timeout=SETTINGS_TIMEOUT,
            summary=self._summary("settings"),
        )
        return settings

    async def _agent(
        self, stage: str, activity: Activity, *args: Any, hours: int
    ) -> BuildPhaseResult:
        options = self._on(self._agent_of(stage))
        if self._route.host:
            self._hosts_used.add(self._route.host)
        result: BuildPhaseResult | None = await self._stage(
            stage,
            activity,
            *args,
            start_to_close_timeout=timedelta(hours=hours),
            retry_policy=AGENT_RETRY,
            heartbeat_timeout=self._heartbeat_timeout(),
            **options,
        )
        return result or BuildPhaseResult(status="skipped")

    def _on(self, agent: str, *, bounded: bool = True) -> dict[str, Any]:
        """Options that run the next activity on `agent`'s host; the status names that host."""
        self._route = route(self._settings, workflow.info().task_queue, agent, bounded=bounded)
        self._status.host, self._status.host_queue = self._route.host, self._route.queue
        return dict(self._route.options)

    def _notifier_options(self) -> dict[str, Any]:
        """Where the failure hold's notification runs: the dispatcher's host, as `notify` and
        the failure path's; the status keeps naming the failed stage's host."""
        return dict(route(self._settings, workflow.info().task_queue, DISPATCHER).options)

    async def _close_elsewhere(self, outcome: str) -> None:
        """The failure path's task-file clean-up on each other host an agent stage ran on:
        `end_pipeline` closes only the files of its own host."""
        here = route(self._settings, workflow.info().task_queue, DISPATCHER).host
        for host in sorted(self._hosts_used - {here}):
            where = on_host(self._settings, workflow.info().task_queue, host)
            with contextlib.suppress(ActivityError):
                await workflow.execute_activity_method(
                    PipelineActivities.close_pipeline_tasks,
                    args=[workflow.info().workflow_id, outcome],
                    start_to_close_timeout=LOCAL_STAGE_TIMEOUT,
                    retry_policy=RetryPolicy(maximum_attempts=3),
                    **where.options,
                )

    async def _stage(self, stage: str, activity: Activity, *args: Any, **options: Any) -> Any:
        """Run one stage; with a hold, a failure parks it for the operator's decision.

        Returns the stage's result, or None when the operator skipped it.
        """
        number = 1
        while True:
            if stage in AGENT_STAGES:
                info = workflow.info()
                self._status.task_ids[stage] = dispatch_task_id(
                    info.workflow_id, info.run_id, stage, number
                )
            try:
                return await self._attempt(stage, activity, args, options)
            except StageFailed as failure:
                if stage not in HOLD_STAGES or self._hold_seconds <= 0:
                    raise
                choice, given = await self._hold(failure)
            if choice == "skip":
                self._skipped.append(stage)
                return None
            number += 1
            if stage in AGENT_STAGES:  # a new activity: a new task file and a new token
                options = {**options, "activity_id": retry_activity_id(stage, number)}
                args = (*args[: _AGENT_ARGS[stage]], given.note)

    async def _attempt(
        self, stage: str, activity: Activity, args: tuple[Any, ...], options: dict[str, Any]
    ) -> Any:
        self._set_stage(stage)
        started = workflow.now()
        try:
            result = await workflow.execute_activity_method(
                activity, args=list(args), summary=self._summary(stage), **options
            )
            if stage in AGENT_STAGES:
                result = read_agent_result(stage, result)
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            failure = self._failed(stage, err)
        except StageFailed as err:
            failure = err
        else:
            observability.record_stage(stage, self._since(started), "success")
            self._mark_done(stage)
            return result
        observability.record_stage(
            stage, self._since(started), METRIC_OUTCOME.get(failure.error_type, "error")
        )
        raise failure

    def _set_stage(self, stage: str) -> None:
        self._status.stage = stage
        self._status.updated_at = self._now()
        self._status.stage_times[stage] = self._status.updated_at
        self._status.awaiting_approval = stage == "awaiting-approval"
        if self._settings.stage_search_attribute:
            workflow.upsert_search_attributes([BUILD_STAGE.value_set(stage)])
        workflow.set_current_details(self._details(stage))

    # --- what the UI shows (workflows/operator_view.py) ----------------------------------------

    def _agent_of(self, stage: str) -> str:
        """The agent an agent stage's task file goes to; "" for the worker's own stages."""
        if stage not in AGENT_STAGES:
            return ""
        return {"prefab": PREFAB_AGENT, "audit": AUDIT_AGENT}.get(stage, self._build.target_agent)

    def _summary(self, stage: str) -> str:
        agent = self._agent_of(stage)
        if agent:
            return operator_view.agent_summary(stage, agent, self._status.task_ids.get(stage, ""))
        return operator_view.worker_summary(stage, self._build.build_name)

    def _details(self, stage: str) -> str:
        if stage == "awaiting-approval":
            task_id, task_file = self._build.task_id, self._origin_path
        else:
            task_id, task_file = self._status.task_ids.get(stage, ""), ""
        return operator_view.current_details(
            build_name=self._build.build_name,
            stage=stage,
            agent=self._agent_of(stage),
            task_id=task_id,
            task_file=task_file,
            error=self._status.error,
            commands=self._operator_commands(stage),
        )

    def _operator_commands(self, stage: str) -> list[operator_view.Command]:
        """The exact commands that move a waiting pipeline on, shown in its current details."""
        if stage == "awaiting-approval":
            return operator_view.gate_commands(workflow.info().workflow_id)
        if stage == "awaiting-retry" and self._held is not None:
            return operator_view.hold_commands(workflow.info().workflow_id, self._held.stage)
        return []

    # --- agent heartbeats ---------------------------------------------------------------------

    def _heartbeat_timeout(self) -> timedelta | None:
        seconds = self._settings.heartbeat_timeout_seconds
        return timedelta(seconds=seconds) if seconds else None

    def _failed(self, stage: str, err: ActivityError) -> StageFailed:
        return StageFailed(
            stage, err, self._agent_of(stage), self._settings.heartbeat_timeout_seconds, self._route
        )

    def _mark_done(self, stage: str) -> None:
        self._status.stages_done.append(stage)
        if stage in SUMMARY_PHASES:
            self._phases.append(stage)

    def _flags_applied(self) -> int:
        return len(self._status.flags) if "fixes" in self._phases else 0

    @staticmethod
    def _since(started: datetime) -> float:
        return (workflow.now() - started).total_seconds()

    @staticmethod
    def _now() -> str:
        return workflow.now().isoformat()
