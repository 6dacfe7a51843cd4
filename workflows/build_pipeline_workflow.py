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
    import workflows.budget as budget
    import workflows.failure_hold as failure_hold
    import workflows.gate as gate
    import workflows.review as review
    import workflows.versions as versions
    from activities.agent_stages import CHANGES_REQUEST
    from activities.build_pipeline_activities import PipelineActivities
    from exceptions import OVER_BUDGET
    from models import (
        DISPATCHER,
        BudgetInput,
        BuildPhaseResult,
        BuildPipelineInput,
        BuildPipelineResult,
        DecisionInput,
        Features,
        Outcome,
        PipelineOutcome,
        PipelineSettings,
        PipelineStatus,
        RerunInput,
        Resolution,
        RoundTrigger,
        TriageOutput,
    )
    from workflows.run_state import RunState
    from workflows.stage_failure import Rerun, StageFailed
    from workflows.stage_runner import StageRunner, finish_shielded, record_settings
    from workflows.stages import (
        AUDIT,
        CLOSE,
        END_DOES,
        FIXES,
        GATE_TIMEOUT,
        IMPLEMENT,
        LOCAL_STAGE_TIMEOUT,
        PREFAB,
        SUMMARY,
        THREE_TRIES,
        TRIAGE,
        Stage,
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
        return gate.decide(self._state, "approved", decision)

    @workflow.update
    def reject(self, decision: DecisionInput | None = None) -> str:
        return gate.decide(self._state, "rejected", decision)

    @workflow.update
    def request_changes(self, decision: DecisionInput | None = None) -> str:
        return gate.decide(self._state, "changes-requested", decision)

    @workflow.update
    def rerun(self, request: RerunInput) -> str:
        return review.ask_rerun(self._state, request)

    @approve.validator
    @reject.validator
    def _check_gate_open(self, decision: DecisionInput | None = None) -> None:
        gate.check_open(self._state)

    @request_changes.validator
    def _check_changes(self, decision: DecisionInput | None = None) -> None:
        gate.check_open(self._state)
        review.check_changes_allowed(self._state)

    @rerun.validator
    def _check_rerun(self, request: RerunInput) -> None:
        review.check_rerun(self._state, request)

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

    # --- the stages ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, build: BuildPipelineInput) -> BuildPipelineResult:
        state = self._state
        # asked first, so the run settles it once (workflows/versions.py)
        if versions.patched(versions.FEWER_EVENTS):
            state.upserts, state.local_checks = "waits", True
        if versions.patched(versions.PIPELINE_SETTINGS):
            state.settings = await record_settings()
        else:
            state.settings = PipelineSettings(
                stage_search_attribute=Features.stage_search_attribute
            )
        state.settle(build)
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
            ended: Outcome = "over_budget" if failure.error_type == OVER_BUDGET else "failed"
            summary = await self._end(
                PipelineOutcome(outcome=ended, failed_stage=failure.stage, error=failure.reason)
            )
            raise ApplicationError(
                f"{failure.stage} failed: {failure.reason} (summary: {summary or 'not written'})",
                type=failure.error_type,
                non_retryable=True,
            ) from None

    async def _pipeline(self, build: BuildPipelineInput) -> BuildPipelineResult:
        state, name = self._state, build.build_name
        back: RerunInput | None = None
        closed: BuildPhaseResult | None = None
        while True:
            try:
                resolution = await self._build_and_review(build, back)
                if resolution is None or resolution.decision == "approved":
                    closed = await self._stages.run(CLOSE, name, build.target_agent)
                break
            except Rerun as rerun:  # the operator sent the run back from the gate or a hold
                back, state.rerun = rerun.request, None
                state.status.failed_stage = state.status.failed_error = ""
        if resolution is not None and resolution.decision != "approved":
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
        done = PipelineOutcome(
            outcome="partial" if state.status.blocks else "success", resolution=state.decision
        )
        summary = await self._summarize(closed.output if closed else "", done)
        observability.record_audit_rounds(len(state.rounds), done.outcome)
        self._stages.set_stage("done", end=True)
        return self._result("complete", summary)

    async def _build_and_review(
        self, build: BuildPipelineInput, back: RerunInput | None
    ) -> Resolution | None:
        """The stages up to the gate, from the start or from where a rerun went back to, and
        the review loop: fixes, a new audit round for verified fixes and requested changes, and
        the gate. Returns the gate's resolution, or None when no block came to it."""
        state, run, name, plan = self._state, self._stages.run, build.build_name, build.plan_path
        start = back.stage if back is not None else PREFAB.name
        if back is not None:
            await review.supersede_from(self._stages, start)
        if start == PREFAB.name:
            await run(PREFAB, *self._again(PREFAB, back, name, plan))
        if start in (PREFAB.name, IMPLEMENT.name):
            task, target = build.task_id, build.target_agent
            await run(IMPLEMENT, *self._again(IMPLEMENT, back, name, task, target, plan))
        fixed = start == FIXES.name
        if fixed:  # again with its latest arguments, then on as after any fixes
            await run(FIXES, *self._again(FIXES, back, *state.last_args[FIXES.name]))
            triage = state.triage
        else:
            by, note = (back.by, back.note) if back is not None else ("", "")
            trigger: RoundTrigger = "rerun" if state.rounds else "first"
            audit_note = note if start == AUDIT.name else ""
            triage = await self._audit(build, trigger, by, audit_note, start if back else "")
        while True:
            survivors: list[str] = []
            if triage.flags and not fixed:
                if state.verify_fixes and self._fixed_as_often_as_allowed():
                    survivors = list(triage.flags)
                elif await run(FIXES, name, triage.flags, build.target_agent) is not None:
                    state.flags_fixed += len(triage.flags)
                    fixed = True
            if fixed and state.verify_fixes and review.rounds_left(state):
                triage, fixed = await self._audit(build, "verify-fixes"), False
                continue
            blocks = [*triage.blocks, *survivors]
            if not blocks:
                return None
            resolution = await gate.notify_and_wait(
                self._stages, build.task_id, blocks, len(survivors)
            )
            if resolution.decision != "changes-requested":
                return resolution
            review.ensure_loops(state, "request_changes")
            state.decision = None  # the next wait at the gate decides anew
            await run(FIXES, name, blocks, build.target_agent, resolution.note, CHANGES_REQUEST)
            trigger = "changes-requested"
            triage, fixed = await self._audit(build, trigger, resolution.by, resolution.note), False

    def _fixed_as_often_as_allowed(self) -> bool:
        """This round audited fixes, and no round is left for another: its flags survived."""
        state = self._state
        return state.rounds[-1].trigger == "verify-fixes" and not review.rounds_left(state)

    def _again(self, row: Stage, back: RerunInput | None, *args: Any) -> tuple[Any, ...]:
        """A stage's arguments; when the operator reran it, with their note for its agent."""
        if back is None or back.stage != row.name or row.with_note is None:
            return args
        return row.with_note(args, back.note)

    async def _audit(
        self,
        build: BuildPipelineInput,
        trigger: RoundTrigger,
        by: str = "",
        note: str = "",
        stage: str = "",
    ) -> TriageOutput:
        """One audit round: the audit (its number and the previous report in the request from
        round 2 on), then its triage."""
        run, name = self._stages.run, build.build_name
        number = review.start_round(self._state, trigger, by, note, stage)
        args: tuple[Any, ...] = (name, build.plan_path)
        if number > 1:
            args = (*args, note, number)
        await run(AUDIT, *args)
        triage: TriageOutput = await run(TRIAGE, name)
        review.found(self._state, triage)
        return triage

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
            if state.audit_round > 1:
                where += f" ({state.round_label()})"
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
            await stages.on_every_host(
                PipelineActivities.close_pipeline_tasks, outcome.outcome, besides=state.route.host
            )
            observability.record_audit_rounds(len(state.rounds), outcome.outcome)
            stages.set_stage(outcome.outcome.replace("_", "-"), end=True)
            return summary

        if outcome.outcome != "cancelled" and not versions.patched(versions.END_SHIELDED):
            return await steps()
        return await finish_shielded(steps())

    async def _summarize(self, report_path: str, outcome: PipelineOutcome) -> str:
        state, build = self._state, self._build
        outcome.task_ids = dict(state.status.task_ids)
        outcome.skipped = list(state.skipped)
        outcome.audit_rounds, outcome.rounds = len(state.rounds), list(state.rounds)
        outcome.usage, outcome.budget_usd = dict(state.status.usage), state.status.budget_usd
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
            state.flags_fixed,
            build.plan_path,
            report_path,
            outcome,
        )
        return path

    def _result(self, status: str, summary: str) -> BuildPipelineResult:
        workflow_id = workflow.info().workflow_id
        return BuildPipelineResult(status=status, workflow_id=workflow_id, summary_path=summary)
