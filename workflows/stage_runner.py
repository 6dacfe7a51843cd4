"""How a workflow runs one row of the stage table: its host, its task id, its UI summary and
current details, the failure hold around it, and its metrics.

`StageRunner` acts on the run's `RunState`, which the workflow owns; it schedules no command
beyond the stage the workflow asks for, the hold's, and the settings' local activity.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    import observability  # stdlib-only at import time; its metric calls are replay-safe here
    import operator_view
    import workflows.budget as budget
    import workflows.costs as costs
    import workflows.failure_hold as failure_hold
    import workflows.versions as versions
    from activities.build_pipeline_activities import PipelineActivities
    from activities.triage import sanitize_finding
    from exceptions import PHASE_FAILED, STAGE_TIMED_OUT
    from models import DISPATCHER, PipelineSettings, dispatch_task_id, retry_activity_id
    from workflows.hosts import HOST_UNAVAILABLE, on_host, route
    from workflows.run_state import RunState
    from workflows.stage_failure import Rerun, StageFailed, read_agent_result
    from workflows.stages import (
        AWAITING_BUDGET,
        LOCAL_STAGE_TIMEOUT,
        SETTINGS_DOES,
        TARGET_AGENT,
        THREE_TRIES,
        Activity,
        Stage,
        with_argument,
    )

SETTINGS_TIMEOUT = timedelta(seconds=10)
WAITING = ("awaiting-approval", "awaiting-retry", AWAITING_BUDGET)
# The blocks the gate's current details list, and how much of each.
SHOWN_BLOCKS, SHOWN_LENGTH = 10, 200
METRIC_OUTCOME = {
    PHASE_FAILED: "failed",
    STAGE_TIMED_OUT: "timed_out",
    HOST_UNAVAILABLE: "timed_out",
}
BUILD_STAGE = SearchAttributeKey.for_keyword("BuildStage")
T = TypeVar("T")


async def record_settings() -> PipelineSettings:
    """The worker's settings, read once by a local activity and recorded in the history: a
    replay, or a worker restarted with other settings, sees the values the run started with."""
    settings: PipelineSettings = await workflow.execute_local_activity_method(
        PipelineActivities.pipeline_settings,
        start_to_close_timeout=SETTINGS_TIMEOUT,
        summary=operator_view.SEP.join(["settings", SETTINGS_DOES]),
    )
    return settings


async def finish_shielded(ending: Coroutine[Any, Any, T]) -> T:
    """Run `ending` to its end in a task of its own: a cancel of the run is delivered once, to
    the await here, and the ending still finishes."""
    task = asyncio.ensure_future(ending)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        return await task


class StageRunner:
    def __init__(self, state: RunState) -> None:
        self.state = state

    # --- running a row ------------------------------------------------------------------------

    async def run(
        self,
        row: Stage,
        *args: Any,
        stage: str = "",
        what: str = "",
        summary: str = "",
        activity_id: str | None = None,
        bounded: bool = True,
    ) -> Any:
        """Run `row` (as `stage`, its name by default); with a hold, a failure parks it for the
        operator's decision. Returns the stage's result, or None when the operator skipped it.

        `what` names the stage in failure reasons, `summary` overrides its UI summary, and
        `activity_id` its first dispatch's id (Temporal's own when None). An agent stage's
        later dispatches (a retry, a rerun, a review round) each get an id of their own, so a
        new task file and token. Raises `Rerun` when the operator sends the run back from a
        hold.
        """
        stage = stage or row.name
        agent = self.agent_of(row)
        options: dict[str, Any] = {**row.limits, **self.on(agent, bounded=bounded)}
        if row.kind == "agent":
            self.state.agents[stage] = agent
            if self.state.route.host:
                self.state.hosts_used.add(self.state.route.host)
            options["heartbeat_timeout"] = self.heartbeat_timeout()
        number, given_args = self.state.dispatches.get(stage, 0) + 1, args
        if activity_id is not None:
            options["activity_id"] = activity_id
        elif number > 1 and row.with_note:
            options["activity_id"] = retry_activity_id(stage, number)
        while True:
            self.state.dispatches[stage], self.state.last_args[stage] = number, args
            if row.kind == "agent":
                await budget.ensure(self, stage)
                info = workflow.info()
                self.state.status.task_ids[stage] = dispatch_task_id(
                    info.workflow_id, info.run_id, stage, number
                )
            try:
                return await self._attempt(row, stage, what, summary, args, options)
            except StageFailed as failure:
                if not self._may_hold(row):
                    raise
                choice, given = await failure_hold.hold(self, failure, row.skippable)
            if choice == "rerun":
                assert self.state.rerun is not None
                raise Rerun(self.state.rerun)
            if choice == "skip":
                self.state.skipped.append(stage)
                return None
            number += 1
            if row.with_note:  # a new activity: a new task file, a new token, the note as data
                options = {**options, "activity_id": retry_activity_id(stage, number)}
                args = row.with_note(given_args, given.note)

    def _may_hold(self, row: Stage) -> bool:
        hold_patch = self.state.hold_patch
        return (
            row.holdable
            and self.state.hold_seconds > 0
            and (not hold_patch or versions.patched(hold_patch))
        )

    async def _attempt(
        self,
        row: Stage,
        stage: str,
        what: str,
        summary: str,
        args: Sequence[Any],
        options: dict[str, Any],
    ) -> Any:
        self.set_stage(stage)
        started = workflow.now()
        left = costs.remaining(self.state) if row.kind == "agent" else None
        if left is not None:  # the task file tells the agent what it may still spend
            args = with_argument(row.activity, tuple(args), "budget_remaining_usd", left)
        agent = self.state.agents.get(stage, "")
        try:
            result = await workflow.execute_activity_method(
                row.activity,
                args=list(args),
                summary=summary or self.summary(row, stage),
                **options,
            )
            if row.kind == "agent":
                costs.record(self.state, stage, agent, row.metric_stage, costs.of_result(result))
                result = read_agent_result(stage, result)
        except ActivityError as err:
            if row.kind == "agent" and not is_cancelled_exception(err):
                costs.record(self.state, stage, agent, row.metric_stage, costs.of_failure(err))
            cancel_patch = self.state.cancel_patch
            if is_cancelled_exception(err) and (not cancel_patch or versions.patched(cancel_patch)):
                raise
            failure = StageFailed(
                stage,
                err,
                self.state.agents.get(stage, ""),
                self.state.settings.heartbeat_timeout_seconds,
                self.state.route,
                what=what,
            )
        except StageFailed as err:
            failure = err
        else:
            observability.record_stage(row.metric_stage, self.since(started), "success")
            self.mark_done(stage, row)
            return result
        outcome = METRIC_OUTCOME.get(failure.error_type, "error")
        observability.record_stage(row.metric_stage, self.since(started), outcome)
        raise failure

    # --- where it runs ------------------------------------------------------------------------

    def agent_of(self, row: Stage) -> str:
        """The agent a row's task file goes to, or whose host a worker stage runs on."""
        return self.state.target_agent if row.agent == TARGET_AGENT else row.agent

    def on(self, agent: str, *, bounded: bool = True) -> dict[str, Any]:
        """Options that run the next activity on `agent`'s host; the status names that host."""
        where = route(self.state.settings, workflow.info().task_queue, agent, bounded=bounded)
        self.state.route = where
        self.state.status.host, self.state.status.host_queue = where.host, where.queue
        return dict(where.options)

    def notifier_options(self) -> dict[str, Any]:
        """Where a notification runs: the dispatcher's host (the status keeps naming the host of
        the stage it is about)."""
        return dict(route(self.state.settings, workflow.info().task_queue, DISPATCHER).options)

    def heartbeat_timeout(self) -> timedelta | None:
        seconds = self.state.settings.heartbeat_timeout_seconds
        return timedelta(seconds=seconds) if seconds else None

    async def on_every_host(
        self, activity: Activity, *args: Any, besides: str | None = None
    ) -> None:
        """A task-file clean-up on each host an agent stage ran on other than `besides` (None:
        on every host, the workflow's own queue included); best effort, as every clean-up."""
        hosts = sorted(self.state.hosts_used - {besides or ""})
        if besides is None:
            hosts = ["", *hosts]
        for host in hosts:
            where = on_host(self.state.settings, workflow.info().task_queue, host)
            with contextlib.suppress(ActivityError):
                await workflow.execute_activity_method(
                    activity,
                    args=[workflow.info().workflow_id, *args],
                    start_to_close_timeout=LOCAL_STAGE_TIMEOUT,
                    retry_policy=THREE_TRIES,
                    **where.options,
                )

    # --- what the status and the UI show ------------------------------------------------------

    def set_stage(self, stage: str, *, end: bool = False) -> None:
        """The stage the status and the UI show, and BuildStage where the run's rule says so;
        `end` for the run's last stage, its outcome."""
        status = self.state.status
        status.stage = stage
        status.updated_at = self.now()
        status.stage_times[stage] = status.updated_at
        status.awaiting_approval = stage == "awaiting-approval"
        if self.state.settings.stage_search_attribute and self._searchable(stage, end):
            workflow.upsert_search_attributes([BUILD_STAGE.value_set(stage)])
            self.state.shown_stage = stage
        workflow.set_current_details(self.details(stage))

    def _searchable(self, stage: str, end: bool) -> bool:
        """Whether `stage` goes into BuildStage: each upsert is a history event and, on a
        self-hosted server, a visibility write."""
        state = self.state
        if state.upserts == "every":
            return True
        if state.upserts == "held":
            return stage in WAITING or bool(state.holds)
        # "waits": a query for a waiting state or the end finds exactly the runs in it
        return stage != state.shown_stage and (
            end or stage in WAITING or state.shown_stage in WAITING
        )

    def summary(self, row: Stage, stage: str) -> str:
        if row.kind == "agent":
            task_id = self.state.status.task_ids.get(stage, "")
            return operator_view.agent_summary(stage, self.agent_of(row), task_id)
        return operator_view.worker_summary(stage, self.state.name, row.does)

    def details(self, stage: str) -> str:
        state, info = self.state, workflow.info()
        facts = [f"- {state.round_label()}"] if state.audit_round > 1 else []
        if stage == "awaiting-approval":
            task_id, task_file = state.origin_task_id, state.origin_path
            changes = state.audit_round < state.max_rounds
            commands = operator_view.gate_commands(info.workflow_id, changes)
            facts = [f"- {state.round_label()}", *self._at_the_gate()]
        else:
            task_id, task_file = state.status.task_ids.get(stage, ""), ""
            commands = []
        if stage == "awaiting-retry" and state.held is not None:
            commands = operator_view.hold_commands(info.workflow_id, state.held_skippable)
        if stage == AWAITING_BUDGET:
            commands = operator_view.budget_commands(info.workflow_id)
        spent, budget_usd = state.status.cost_usd, state.status.budget_usd
        if spent or budget_usd is not None:
            of = f" of the ${budget_usd:.2f} budget" if budget_usd is not None else ""
            facts.append(f"- agents' reported cost so far: ${spent:.2f}{of}")
        return operator_view.current_details(
            build_name=state.name,
            stage=stage,
            agent=state.agents.get(stage, ""),
            task_id=task_id,
            task_file=task_file,
            error=state.status.error,
            facts=[*facts, *state.wait_facts],
            commands=commands,
        )

    def _at_the_gate(self) -> list[str]:
        """What the operator decides on: the blocks (sanitised, capped), the flags applied so
        far, and the round's report."""
        blocks = self.state.status.blocks
        lines = [f"- blocks ({len(blocks)}):"]
        lines += [f"  - {sanitize_finding(b, SHOWN_LENGTH)}" for b in blocks[:SHOWN_BLOCKS]]
        if len(blocks) > SHOWN_BLOCKS:
            lines.append(f"  - and {len(blocks) - SHOWN_BLOCKS} more (the `status` query)")
        lines.append(f"- flags applied so far: {self.state.flags_fixed}")
        if self.state.triage.report_path:
            lines.append(f"- report: `{self.state.triage.report_path}`")
        return lines

    def mark_done(self, stage: str, row: Stage | None = None) -> None:
        self.state.status.stages_done.append(stage)
        if row is not None and row.in_summary and stage not in self.state.phases:
            self.state.phases.append(stage)

    @staticmethod
    def since(started: datetime) -> float:
        return (workflow.now() - started).total_seconds()

    @staticmethod
    def now() -> str:
        return workflow.now().isoformat()
