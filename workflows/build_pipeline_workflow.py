"""BuildPipelineWorkflow: one build from scaffold to summary, with an operator gate on blocks.

The nine stages, their activities and bounds are the README's stage table; `_pipeline` below
reads like it. The stage runner (`workflows/stage_runner.py`) runs each one: its host, task id,
UI summary, current details and failure hold.

Agent stages (1, 2, 3, 5, 8) hand a task file to an agent and wait for complete_activity.py;
with AGENT_HEARTBEAT_TIMEOUT they also carry that heartbeat timeout. Each activity has a UI
summary, and the current details follow the stages (workflows/operator_view.py).
Any failure, a reject or a gate timeout takes the failure path: summary, one notification, open
task files closed, then the workflow ends (failed, or completed with status `rejected`).

Hosts (AGENT_HOSTS, recorded in the settings): each stage runs on the host of the agent whose
files it writes or reads: prefab on claudebox's, implement/fixes/close on the target agent's,
audit and triage on security-agent's; notify, the gate's poll, the summary and the failure
path's notification on the dispatcher's (the originating task file lives there). An unmapped
agent's stage runs on any worker of the pipeline's queue, as on a single host.

With a failure hold (FAILURE_HOLD or the input's `failure_hold_seconds`), a failed stage (any
but the gate and the summary) parks at `awaiting-retry` until the operator's `retry`, `skip` or
`abort`, or the hold's end.
`temporal workflow cancel` takes the failure path too, then ends the workflow CANCELED.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    import observability  # stdlib-only at import time; its metric calls are replay-safe here
    from activities.agent_stages import AgentStageActivities as AgentStages
    from activities.build_pipeline_activities import PipelineActivities as WorkerStages
    from exceptions import TRIAGE_MALFORMED
    from models import (
        AUDIT_AGENT,
        DISPATCHER,
        BuildPipelineInput,
        BuildPipelineResult,
        DecisionInput,
        Outcome,
        PipelineOutcome,
        PipelineSettings,
        PipelineStatus,
        Resolution,
        TriageOutput,
    )
    from workflows.hosts import Route
    from workflows.stage_failure import StageFailed
    from workflows.stage_runner import LOCAL_STAGE_TIMEOUT, StageRunner

APPROVAL_TIMED_OUT = "ApprovalTimedOutError"
GATE_TIMEOUT = timedelta(days=7)
NOTIFY_HEARTBEAT = timedelta(minutes=1)
# One check reads one file; a check lost with a dead worker or server is retried this soon.
GATE_CHECK_TIMEOUT = timedelta(seconds=10)


# Pipelines cancelled before this patch ended at once, with no summary or clean-up.
CANCEL_PATCH = "cancel-cleanup"
CANCELLED_ERROR = "cancelled by the operator (temporal workflow cancel)"
# Before this patch a cancel that arrived while a failure, reject or timeout was being wound up
# cut the failure path short (no status, possibly no notification or clean-up).
END_SHIELD_PATCH = "end-shielded"


TRIAGE_RETRY = RetryPolicy(
    maximum_attempts=5,
    initial_interval=timedelta(minutes=2),
    maximum_interval=timedelta(minutes=15),
    non_retryable_error_types=[TRIAGE_MALFORMED],
)
# The gate's fallback check reads the file once per attempt; its activity sets each retry's
# delay (BLOCK_POLL_SECONDS, or 12x that for a file the watcher covers), so this interval only
# applies to unexpected failures.
GATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)
)


@workflow.defn(failure_exception_types=[ValidationError])
class BuildPipelineWorkflow(StageRunner):
    @workflow.init
    def __init__(self, build: BuildPipelineInput) -> None:
        info = workflow.info()
        self._build = build
        self._status = PipelineStatus(
            workflow_id=info.workflow_id,
            build_name=build.build_name,
            stage="start",
            stages_done=[],
            started_at=self._now(),
            updated_at=self._now(),
        )
        self._decision: Resolution | None = None
        self._awaiting = False
        self._phases: list[str] = []
        self._settings = PipelineSettings()
        self._origin_path = ""  # the originating task file, once the notify stage found it
        self._route = Route()
        self._hosts_used: set[str] = set()
        self._init_hold()

    # --- operator interface ----------------------------------------------------------------

    @workflow.query
    def status(self) -> PipelineStatus:
        return self._status

    @workflow.update
    def approve(self, decision: DecisionInput | None = None) -> str:
        return self._decide("approved", decision)

    @workflow.update
    def reject(self, decision: DecisionInput | None = None) -> str:
        return self._decide("rejected", decision)

    @approve.validator
    @reject.validator
    def _check_gate_open(self, decision: DecisionInput | None = None) -> None:
        if not self._awaiting or self._decision is not None:
            raise ValueError(f"no block is awaiting approval (stage: {self._status.stage})")

    def _decide(self, decision: str, given: DecisionInput | None) -> str:
        # The validator refuses a second decision (two workers' watchers seeing one file write
        # both send it); should an interceptor ever suspend between a validator and its handler,
        # the second still fails here as a refusal instead of overwriting the first.
        if self._decision is not None:
            raise ApplicationError(
                f"the blocks are already {self._decision.decision} (via {self._decision.via})",
                type="AlreadyDecidedError",
                non_retryable=True,
            )
        given = given or DecisionInput()
        by = given.by or ("operator" if given.via == "update" else "")
        self._decision = Resolution(
            decision=decision,  # type: ignore[arg-type]
            via=given.via,
            by=by,
            note=given.note,
            at=self._now(),
        )
        return decision

    # --- the stages ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, build: BuildPipelineInput) -> BuildPipelineResult:
        self._settings = await self._load_settings()
        self._hold_seconds = (
            self._settings.failure_hold_seconds
            if build.failure_hold_seconds is None
            else build.failure_hold_seconds
        )
        try:
            return await self._pipeline(build)
        except (asyncio.CancelledError, ActivityError) as err:
            if not is_cancelled_exception(err) or not workflow.patched(CANCEL_PATCH):
                raise
            stage = self._held.stage if self._held else self._status.stage
            # the run's cancel was delivered once, to the await it interrupted; the clean-up
            # runs shielded, and the cancel is re-raised after it
            await self._end_shielded(
                build,
                PipelineOutcome(outcome="cancelled", failed_stage=stage, error=CANCELLED_ERROR),
            )
            raise
        except StageFailed as failure:
            summary = await self._wind_up(
                build,
                PipelineOutcome(outcome="failed", failed_stage=failure.stage, error=failure.reason),
            )
            raise ApplicationError(
                f"{failure.stage} failed: {failure.reason} (summary: {summary or 'not written'})",
                type=failure.error_type,
                non_retryable=True,
            ) from None

    async def _pipeline(self, build: BuildPipelineInput) -> BuildPipelineResult:
        name, plan = build.build_name, build.plan_path
        await self._agent("prefab", AgentStages.prefab_scaffolding, name, plan, hours=2)
        await self._agent(
            "implement",
            AgentStages.implement_build,
            name,
            build.task_id,
            build.target_agent,
            plan,
            hours=4,
        )
        await self._agent("audit", AgentStages.request_security_audit, name, plan, hours=4)
        triage: TriageOutput = await self._stage(
            "triage",
            WorkerStages.process_triage_output,
            name,
            start_to_close_timeout=LOCAL_STAGE_TIMEOUT,
            retry_policy=TRIAGE_RETRY,
            **self._on(AUDIT_AGENT),
        )
        self._status.blocks, self._status.flags = triage.blocks, triage.flags

        if triage.flags:
            await self._agent(
                "fixes",
                AgentStages.apply_flag_fixes,
                name,
                triage.flags,
                build.target_agent,
                hours=2,
            )
        if triage.blocks:
            task_path: str = (
                await self._stage(
                    "notify",
                    WorkerStages.notify_blocks,
                    name,
                    build.task_id,
                    triage.blocks,
                    start_to_close_timeout=timedelta(minutes=30),
                    heartbeat_timeout=NOTIFY_HEARTBEAT,
                    retry_policy=RetryPolicy(maximum_attempts=3),
                    **self._on(DISPATCHER),
                )
                or ""
            )
            self._origin_path = task_path
            resolution = await self._gate(build, task_path)
            if resolution.decision != "approved":
                return await self._stop(build, resolution)

        closed = await self._agent(
            "close", AgentStages.close_build, name, build.target_agent, hours=2
        )
        done = PipelineOutcome(
            outcome="partial" if triage.blocks else "success", resolution=self._decision
        )
        summary = await self._summarize(build, closed.output or "", done)
        self._set_stage("done")
        return BuildPipelineResult(
            status="complete", workflow_id=workflow.info().workflow_id, summary_path=summary
        )

    async def _gate(self, build: BuildPipelineInput, task_path: str) -> Resolution:
        """Park until an update decides (the operator's, or the worker's watcher delivering a
        decision written into the task file), the fallback check finds one there, or 7 days
        pass. Both ways of deciding leave the same commands: nothing here needed a patch."""
        self._set_stage("awaiting-approval")
        self._awaiting = True
        parked = workflow.now()
        poller = workflow.start_activity_method(
            WorkerStages.wait_for_block_resolution,
            args=[build.build_name, build.task_id, task_path],
            schedule_to_close_timeout=GATE_TIMEOUT + timedelta(hours=1),
            summary=self._summary("awaiting-approval"),
            start_to_close_timeout=GATE_CHECK_TIMEOUT,
            retry_policy=GATE_RETRY,
            **self._on(DISPATCHER, bounded=False),
        )
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None or poller.done(),
                timeout=GATE_TIMEOUT,
                timeout_summary="no decision on the blocks within 7 days",
            )
        except TimeoutError:
            self._decision = Resolution(decision="timed_out", via="timer", at=self._now())
        finally:
            self._awaiting = False
        if self._decision is None:
            try:
                found: dict[str, str] = poller.result()
            except ActivityError as err:
                raise StageFailed("awaiting-approval", err) from None
            self._decision = Resolution(
                decision=found["decision"],  # type: ignore[arg-type]
                via="task-file",
                by=found.get("by", ""),
                note=found.get("note", ""),
                at=self._now(),
            )
        elif not poller.done():
            poller.cancel()
            with contextlib.suppress(ActivityError, asyncio.CancelledError):
                await poller
        self._mark_done("awaiting-approval")
        observability.record_block_wait(self._since(parked), self._decision.decision)
        self._status.resolution = self._decision
        return self._decision

    async def _stop(self, build: BuildPipelineInput, resolution: Resolution) -> BuildPipelineResult:
        """A reject or a gate timeout: no close-out; the summary says why."""
        outcome: Outcome = "rejected" if resolution.decision == "rejected" else "timed_out"
        summary = await self._wind_up(
            build, PipelineOutcome(outcome=outcome, resolution=resolution)
        )
        if outcome == "timed_out":
            raise ApplicationError(
                f"no decision on {build.build_name}'s blocks within {GATE_TIMEOUT.days} days "
                f"(summary: {summary or 'not written'})",
                type=APPROVAL_TIMED_OUT,
                non_retryable=True,
            )
        return BuildPipelineResult(
            status="rejected", workflow_id=workflow.info().workflow_id, summary_path=summary
        )

    async def _wind_up(self, build: BuildPipelineInput, outcome: PipelineOutcome) -> str:
        """The ending of a failure, a reject or a gate timeout: since END_SHIELD_PATCH a cancel
        that arrives meanwhile does not cut it short, and the pipeline ends as it was ending."""
        if not workflow.patched(END_SHIELD_PATCH):
            return await self._end(build, outcome)
        return await self._end_shielded(build, outcome)

    async def _end_shielded(self, build: BuildPipelineInput, outcome: PipelineOutcome) -> str:
        """`_end` in a task of its own, shielded: a cancel is delivered once, to the await
        here, and `_end` still runs to its end."""
        ending = asyncio.ensure_future(self._end(build, outcome))
        try:
            return await asyncio.shield(ending)
        except asyncio.CancelledError:
            return await ending

    async def _end(self, build: BuildPipelineInput, outcome: PipelineOutcome) -> str:
        """Failure path: summary, then open task files closed and one notification.

        Each step is attempted even when the one before failed; returns the summary path or "".
        """
        self._status.outcome = outcome.outcome
        self._status.error = outcome.error
        outcome.resolution = outcome.resolution or self._decision
        summary = ""
        with contextlib.suppress(StageFailed):
            summary = await self._summarize(build, "", outcome)
        where = f" at {outcome.failed_stage}: {outcome.error}" if outcome.failed_stage else ""
        saved = f"; summary: {summary}" if summary else ""
        message = f"pipeline {outcome.outcome}{where}{saved}"
        with contextlib.suppress(ActivityError):
            await workflow.execute_activity_method(
                WorkerStages.end_pipeline,
                args=[workflow.info().workflow_id, build.build_name, outcome.outcome, message],
                start_to_close_timeout=LOCAL_STAGE_TIMEOUT,
                summary=self._summary("end"),
                retry_policy=RetryPolicy(maximum_attempts=3),
                **self._on(DISPATCHER),
            )
        await self._close_elsewhere(outcome.outcome)
        self._set_stage(outcome.outcome.replace("_", "-"))
        return summary

    async def _summarize(
        self, build: BuildPipelineInput, report_path: str, outcome: PipelineOutcome
    ) -> str:
        outcome.task_ids = dict(self._status.task_ids)
        outcome.skipped = list(self._skipped)
        completed_at = self._now()
        self._set_stage("summary")
        path: str = await self._stage(
            "summary",
            WorkerStages.summarize_workflow,
            workflow.info().workflow_id,
            build.build_name,
            self._status.started_at,
            completed_at,
            list(self._phases),
            len(self._status.blocks),
            self._flags_applied(),
            build.plan_path,
            report_path,
            outcome,
            start_to_close_timeout=LOCAL_STAGE_TIMEOUT,
            retry_policy=RetryPolicy(maximum_attempts=3),
            **self._on(DISPATCHER),
        )
        return path
