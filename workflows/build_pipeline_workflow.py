"""BuildPipelineWorkflow: one build from scaffold to summary, with an operator gate on blocks.

`_pipeline` below runs the rows of the stage table (`workflows/stages.py`, the README's stage
table) in order; the conditions, the gate and the ending are written here. The stage runner
(`workflows/stage_runner.py`) runs each row: its host, task id, UI summary, current details and
failure hold. The run's state is one `RunState`, which this class owns.

Agent stages hand a task file to an agent and wait for complete_activity.py; with
AGENT_HEARTBEAT_TIMEOUT they also carry that heartbeat timeout. Any failure, a reject or a gate
timeout takes the failure path: summary, one notification, open task files closed, then the
workflow ends (failed, or completed with status `rejected`). `temporal workflow cancel` takes it
too, then ends the workflow CANCELED.

Hosts (AGENT_HOSTS, recorded in the settings): each stage runs on the host of the agent whose
files it writes or reads (a row's `agent`); an unmapped agent's stage runs on any worker of the
pipeline's queue, as on a single host. With a failure hold (FAILURE_HOLD or the input's
`failure_hold_seconds`), a failed holdable stage parks at `awaiting-retry` until the operator's
`retry`, `skip` or `abort`, or the hold's end.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    import observability  # stdlib-only at import time; its metric calls are replay-safe here
    import operator_view
    from activities.build_pipeline_activities import PipelineActivities
    from models import (
        DISPATCHER,
        BuildPhaseResult,
        BuildPipelineInput,
        BuildPipelineResult,
        DecisionInput,
        Features,
        Outcome,
        PipelineOutcome,
        PipelineSettings,
        PipelineStatus,
        Resolution,
        TriageOutput,
    )
    from workflows import failure_hold, versions
    from workflows.run_state import RunState
    from workflows.stage_failure import StageFailed
    from workflows.stage_runner import StageRunner, finish_shielded, record_settings
    from workflows.stages import (
        AUDIT,
        CLOSE,
        END_DOES,
        FIXES,
        GATE,
        GATE_TIMEOUT,
        IMPLEMENT,
        LOCAL_STAGE_TIMEOUT,
        NOTIFY,
        PREFAB,
        SUMMARY,
        THREE_TRIES,
        TRIAGE,
    )

APPROVAL_TIMED_OUT = "ApprovalTimedOutError"
CANCELLED_ERROR = "cancelled by the operator (temporal workflow cancel)"


@workflow.defn(failure_exception_types=[ValidationError])
class BuildPipelineWorkflow:
    @workflow.init
    def __init__(self, build: BuildPipelineInput) -> None:
        now = workflow.now().isoformat()
        self._build = build
        self._state = RunState(
            name=build.build_name,
            target_agent=build.target_agent,
            origin_task_id=build.task_id,
            cancel_patch=versions.CANCEL_CLEANUP,
            status=PipelineStatus(
                workflow_id=workflow.info().workflow_id,
                build_name=build.build_name,
                stage="start",
                stages_done=[],
                started_at=now,
                updated_at=now,
            ),
        )
        self._stages = StageRunner(self._state)

    # --- operator interface ----------------------------------------------------------------

    @workflow.query
    def status(self) -> PipelineStatus:
        return self._state.status

    @workflow.update
    def approve(self, decision: DecisionInput | None = None) -> str:
        return self._decide("approved", decision)

    @workflow.update
    def reject(self, decision: DecisionInput | None = None) -> str:
        return self._decide("rejected", decision)

    @approve.validator
    @reject.validator
    def _check_gate_open(self, decision: DecisionInput | None = None) -> None:
        if not self._state.awaiting or self._state.decision is not None:
            raise ValueError(f"no block is awaiting approval (stage: {self._state.status.stage})")

    @workflow.update
    def retry(self, decision: DecisionInput | None = None) -> str:
        return failure_hold.choose(self._state, "retry", decision)

    @workflow.update
    def skip(self, decision: DecisionInput | None = None) -> str:
        return failure_hold.choose(self._state, "skip", decision)

    @workflow.update
    def abort(self, decision: DecisionInput | None = None) -> str:
        return failure_hold.choose(self._state, "abort", decision)

    @skip.validator
    def _check_skippable(self, decision: DecisionInput | None = None) -> None:
        failure_hold.check_skippable(self._state)

    @retry.validator
    @abort.validator
    def _check_held(self, decision: DecisionInput | None = None) -> None:
        failure_hold.check_held(self._state)

    def _decide(self, decision: str, given: DecisionInput | None) -> str:
        # The validator refuses a second decision (two workers' watchers seeing one file write
        # both send it); should an interceptor ever suspend between a validator and its handler,
        # the second still fails here as a refusal instead of overwriting the first.
        state = self._state
        if state.decision is not None:
            raise ApplicationError(
                f"the blocks are already {state.decision.decision} (via {state.decision.via})",
                type="AlreadyDecidedError",
                non_retryable=True,
            )
        given = given or DecisionInput()
        state.decision = Resolution(
            decision=decision,  # type: ignore[arg-type]
            via=given.via,
            by=given.by or ("operator" if given.via == "update" else ""),
            note=given.note,
            at=self._stages.now(),
        )
        return decision

    # --- the stages ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, build: BuildPipelineInput) -> BuildPipelineResult:
        state = self._state
        if versions.patched(versions.PIPELINE_SETTINGS):
            state.settings = await record_settings()
        else:
            state.settings = PipelineSettings(
                stage_search_attribute=Features.stage_search_attribute
            )
        state.hold_seconds = (
            state.settings.failure_hold_seconds
            if build.failure_hold_seconds is None
            else build.failure_hold_seconds
        )
        try:
            return await self._pipeline(build)
        except (asyncio.CancelledError, ActivityError) as err:
            if not is_cancelled_exception(err) or not versions.patched(versions.CANCEL_CLEANUP):
                raise
            stage = state.held.stage if state.held else state.status.stage
            await self._end(
                PipelineOutcome(outcome="cancelled", failed_stage=stage, error=CANCELLED_ERROR)
            )
            raise
        except StageFailed as failure:
            summary = await self._end(
                PipelineOutcome(outcome="failed", failed_stage=failure.stage, error=failure.reason)
            )
            raise ApplicationError(
                f"{failure.stage} failed: {failure.reason} (summary: {summary or 'not written'})",
                type=failure.error_type,
                non_retryable=True,
            ) from None

    async def _pipeline(self, build: BuildPipelineInput) -> BuildPipelineResult:
        run, name, plan = self._stages.run, build.build_name, build.plan_path
        await run(PREFAB, name, plan)
        await run(IMPLEMENT, name, build.task_id, build.target_agent, plan)
        await run(AUDIT, name, plan)
        triage: TriageOutput = await run(TRIAGE, name)
        self._state.status.blocks, self._state.status.flags = triage.blocks, triage.flags
        if triage.flags:
            await run(FIXES, name, triage.flags, build.target_agent)
        if triage.blocks:
            self._state.origin_path = await run(NOTIFY, name, build.task_id, triage.blocks) or ""
            resolution = await self._gate(build)
            if resolution.decision != "approved":
                outcome: Outcome = "rejected" if resolution.decision == "rejected" else "timed_out"
                summary = await self._end(PipelineOutcome(outcome=outcome, resolution=resolution))
                if outcome == "timed_out":
                    raise ApplicationError(
                        f"no decision on {name}'s blocks within {GATE_TIMEOUT.days} days "
                        f"(summary: {summary or 'not written'})",
                        type=APPROVAL_TIMED_OUT,
                        non_retryable=True,
                    )
                return self._result("rejected", summary)
        closed: BuildPhaseResult | None = await run(CLOSE, name, build.target_agent)
        done = PipelineOutcome(
            outcome="partial" if triage.blocks else "success", resolution=self._state.decision
        )
        summary = await self._summarize(closed.output if closed else "", done)
        self._stages.set_stage("done")
        return self._result("complete", summary)

    async def _gate(self, build: BuildPipelineInput) -> Resolution:
        """Park until an update decides (the operator's, or the worker's watcher delivering a
        decision written into the task file), the fallback check finds one there, or 7 days
        pass. Both ways of deciding leave the same commands: nothing here needed a patch."""
        state, stages = self._state, self._stages
        stages.set_stage(GATE.name)
        state.awaiting = True
        parked = workflow.now()
        options: dict[str, Any] = {**GATE.limits, **stages.on(GATE.agent, bounded=False)}
        poller = workflow.start_activity_method(
            GATE.activity,
            args=[build.build_name, build.task_id, state.origin_path],
            summary=stages.summary(GATE, GATE.name),
            **options,
        )
        try:
            await workflow.wait_condition(
                lambda: state.decision is not None or poller.done(),
                timeout=GATE_TIMEOUT,
                timeout_summary="no decision on the blocks within 7 days",
            )
        except TimeoutError:
            state.decision = Resolution(decision="timed_out", via="timer", at=stages.now())
        finally:
            state.awaiting = False
        if state.decision is None:
            try:
                found: dict[str, str] = poller.result()
            except ActivityError as err:
                raise StageFailed(GATE.name, err) from None
            state.decision = Resolution(
                decision=found["decision"],  # type: ignore[arg-type]
                via="task-file",
                by=found.get("by", ""),
                note=found.get("note", ""),
                at=stages.now(),
            )
        elif not poller.done():
            poller.cancel()
            with contextlib.suppress(ActivityError, asyncio.CancelledError):
                await poller
        stages.mark_done(GATE.name)
        observability.record_block_wait(stages.since(parked), state.decision.decision)
        state.status.resolution = state.decision
        return state.decision

    async def _end(self, outcome: PipelineOutcome) -> str:
        """The ending of a failure, a reject, a gate timeout or a cancel: the summary, then the
        run's open task files closed and one notification, each attempted even when the one
        before failed. Returns the summary's path, or "".

        A cancel's ending, and since END_SHIELDED every ending, runs shielded in a task of its
        own: a cancel is delivered once, to the await here, and the ending still finishes, so
        the pipeline ends as it was ending.
        """
        state, stages = self._state, self._stages

        async def steps() -> str:
            state.status.outcome, state.status.error = outcome.outcome, outcome.error
            outcome.resolution = outcome.resolution or state.decision
            summary = ""
            with contextlib.suppress(StageFailed):
                summary = await self._summarize("", outcome)
            where = f" at {outcome.failed_stage}: {outcome.error}" if outcome.failed_stage else ""
            saved = f"; summary: {summary}" if summary else ""
            with contextlib.suppress(ActivityError):
                await workflow.execute_activity_method(
                    PipelineActivities.end_pipeline,
                    args=[
                        workflow.info().workflow_id,
                        state.name,
                        outcome.outcome,
                        f"pipeline {outcome.outcome}{where}{saved}",
                    ],
                    start_to_close_timeout=LOCAL_STAGE_TIMEOUT,
                    summary=operator_view.worker_summary("end", state.name, END_DOES),
                    retry_policy=THREE_TRIES,
                    **stages.on(DISPATCHER),
                )
            # end_pipeline closed the run's files on the dispatcher's host; the others here
            await stages.close_elsewhere(outcome.outcome, besides=state.route.host)
            stages.set_stage(outcome.outcome.replace("_", "-"))
            return summary

        if outcome.outcome != "cancelled" and not versions.patched(versions.END_SHIELDED):
            return await steps()
        return await finish_shielded(steps())

    async def _summarize(self, report_path: str, outcome: PipelineOutcome) -> str:
        state, build = self._state, self._build
        outcome.task_ids = dict(state.status.task_ids)
        outcome.skipped = list(state.skipped)
        completed_at = self._stages.now()
        self._stages.set_stage(SUMMARY.name)
        path: str = await self._stages.run(
            SUMMARY,
            workflow.info().workflow_id,
            build.build_name,
            state.status.started_at,
            completed_at,
            list(state.phases),
            len(state.status.blocks),
            state.flags_applied(),
            build.plan_path,
            report_path,
            outcome,
        )
        return path

    def _result(self, status: str, summary: str) -> BuildPipelineResult:
        workflow_id = workflow.info().workflow_id
        return BuildPipelineResult(status=status, workflow_id=workflow_id, summary_path=summary)
