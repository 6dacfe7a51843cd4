"""BuildPipelineWorkflow's activities that are not agent stages, thin over the task-file module.

They run in the worker: the pipeline's settings, triage parsing, block notification, the block
gate's check, the summary, and the failure path's clean-up. The agent stages are in
activities/agent_stages.py. Activity names and positional arguments are the original's; new
trailing arguments have defaults.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

import observability
from activities import gate_files, task_files
from activities.agent_stages import REPORT_FILE, TRIAGE_FILE, audit_dir, task_file_failure
from activities.gate_watcher import GateWatcher
from activities.notify import notify_once
from activities.triage import MAX_TRIAGE_BYTES, parse_triage, sanitize_finding
from config import WorkerConfig
from exceptions import TASK_FILE_ERROR, TRIAGE_MALFORMED, TaskFileError, TriageError
from models import Features, PipelineOutcome, PipelineSettings, TriageOutput

TRIAGE_NOT_READY = "TriageNotReadyError"
GATE_WAITING = "AwaitingApprovalError"  # the gate's "not yet": benign, retried by Temporal
# A file the worker's watcher covers is checked this many times less often: the check is only a
# safety net there, for a change the watcher missed (hourly at the default BLOCK_POLL_SECONDS).
WATCHED_POLL_FACTOR = 12
_SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,150}")


def summary_file_name(workflow_id: str) -> str:
    """`<workflow_id>.yml` when the id is a plain file name, else an encoded, bounded name.

    Workflow ids are chosen by whoever starts the workflow; none may escape the summary dir.
    """
    if _SAFE_FILE_NAME.fullmatch(workflow_id) and ".." not in workflow_id:
        return f"{workflow_id}.yml"
    encoded = quote(workflow_id, safe="").replace(".", "%2E")
    if len(encoded) > 150:
        digest = hashlib.sha256(workflow_id.encode("utf-8")).hexdigest()[:16]
        encoded = f"{encoded[:120]}-{digest}"
    return f"{encoded}.yml"


def usage_summary(outcome: PipelineOutcome) -> dict[str, Any]:
    """The summary's `usage`: totals of what agents reported, and per stage; a stage none of
    whose attempts reported usage says `cost_usd: unknown`."""
    by_stage: dict[str, Any] = {}
    for stage, used in outcome.usage.items():
        row: dict[str, Any] = used.model_dump(exclude={"unknown"})
        if used.unknown == used.attempts:
            row["cost_usd"] = "unknown"
        elif used.unknown:
            row["attempts_without_usage"] = used.unknown
        by_stage[stage] = row
    known = [u for u in outcome.usage.values() if u.unknown < u.attempts]
    return {
        "cost_usd": round(sum(u.cost_usd for u in known), 6),
        "input_tokens": sum(u.input_tokens for u in known),
        "output_tokens": sum(u.output_tokens for u in known),
        "by_stage": by_stage,
    }


def month_of(started_at: str) -> str:
    try:
        return datetime.fromisoformat(started_at.replace("Z", "+00:00")).strftime("%Y-%m")
    except ValueError:
        return datetime.now(UTC).strftime("%Y-%m")


class PipelineActivities:
    def __init__(self, config: WorkerConfig, watcher: GateWatcher | None = None) -> None:
        self.config = config
        self.watcher = watcher

    @activity.defn(name="pipeline_settings")
    async def pipeline_settings(self) -> PipelineSettings:
        """The settings a pipeline starts with; it runs as a local activity, so its result is
        recorded in the history and a replay never asks this worker's process again."""
        return PipelineSettings(
            stage_search_attribute=Features.stage_search_attribute,
            heartbeat_timeout_seconds=self.config.heartbeat_timeout_seconds,
            agent_hosts=dict(self.config.agent_hosts),
            host_wait_seconds=self.config.host_wait_seconds,
            failure_hold_seconds=self.config.failure_hold_seconds,
            max_audit_rounds=self.config.max_audit_rounds,
            verify_fixes=self.config.verify_fixes,
            decision_reminders=list(self.config.decision_reminders),
            budget_usd=self.config.budget_usd,
        )

    @activity.defn(name="process_triage_output")
    async def process_triage_output(self, build_name: str) -> TriageOutput:
        try:
            path = audit_dir(self.config, build_name) / TRIAGE_FILE
        except TaskFileError as err:
            raise task_file_failure(err) from None

        def read_and_parse() -> TriageOutput | None:
            try:
                with path.open("rb") as fh:
                    raw = fh.read(MAX_TRIAGE_BYTES + 1)
            except FileNotFoundError:
                return None
            return parse_triage(raw, str(path)) if raw.strip() else None

        try:
            triage = await asyncio.to_thread(read_and_parse)
        except TriageError as err:
            raise ApplicationError(str(err), type=TRIAGE_MALFORMED, non_retryable=True) from None
        if triage is None:
            raise ApplicationError(
                f"{TRIAGE_FILE} not found at {path}; security audit may still be running",
                type=TRIAGE_NOT_READY,
            )
        observability.activity_logger().info(
            "triage_processed",
            build=build_name,
            blocks=len(triage.blocks),
            flags=len(triage.flags),
            info=len(triage.info),
        )
        triage.report_path = str(path.parent / REPORT_FILE)
        return triage

    @activity.defn(name="notify_blocks")
    async def notify_blocks(
        self,
        build_name: str,
        task_id: str,
        blocks: list[str],
        audit_round: int = 1,
        context: str = "",
    ) -> str:
        """Mark the originating task `input-required`, then notify once per block.

        From audit round 2 on (a review loop) each message names the round, and `context` says
        more (flags that survived the fixes); a round's messages are sent once per round.

        Returns the originating task file's path ("" when it cannot be found: the gate then
        waits for the `approve`/`reject` update alone). The file is updated first, so a failing
        update is retried before anything was sent; each message is sent at most once per run.
        """
        info = activity.info()
        log = observability.activity_logger(build=build_name)
        n = len(blocks)
        note = (
            f"BuildPipelineWorkflow blocked on {n} security finding(s) for '{build_name}'. "
            "Matrix notification sent. Approve task to resume."
        )
        queue = self.config.agent_task_dir

        def mark() -> Path | None:
            path = task_files.find_task(queue, task_id)
            if path is not None:  # the mark tells the watcher which run a decision is for
                task_files.update_task_status(
                    path,
                    task_files.INPUT_REQUIRED,
                    note,
                    workflow_id=info.workflow_id or "",
                    run_id=info.workflow_run_id or "",
                )
            return path

        try:
            path = await asyncio.to_thread(mark)
        except TaskFileError as err:
            raise ApplicationError(
                f"cannot mark task {task_id} input-required: {err}", type=TASK_FILE_ERROR
            ) from None
        if path is None:
            log.warning("task_not_found", task_id=task_id)
        else:
            log.info("task_input_required", task_id=task_id, block_count=n)
        how = (
            f"Resolve: set task {task_id} to approved, or run: temporal workflow update "
            f"execute --workflow-id {info.workflow_id} --name approve (or reject)"
        )
        where, key = "", f"{info.workflow_run_id}:block"
        if audit_round > 1:
            where, key = f" ({context or f'audit round {audit_round}'})", f"{key}:{audit_round}"
            how += (
                ", request_changes (fixes, then another audit) or rerun "
                '(--input \'{"stage": "implement"}\')'
            )
        for i, block in enumerate(blocks, start=1):
            message = (
                f"[ACTION] {build_name}: block {i}/{n} needs review{where}\n\n"
                f"{sanitize_finding(block)}\n\n{how}"
            )
            await notify_once(self.config, message, key=f"{key}:{i}")
            activity.heartbeat(i)  # a killed worker is noticed in a minute, not 30
            log.info("block_notified", index=i, total=n)
        return str(path) if path else ""

    @activity.defn(name="wait_for_block_resolution")
    async def wait_for_block_resolution(
        self,
        build_name: str,
        task_id: str,
        task_path: str = "",
        changes_allowed: bool = True,
        check: int = 0,
    ) -> dict[str, Any]:
        """Check the originating task file once: its decision when `approved` (or `rejected`,
        or `changes-requested` while the run has audit rounds left, `changes_allowed`), else
        when to check again. The fallback behind the watcher.

        With `check` 0 (runs parked before the `decision-waits` patch) "not yet" is a benign
        failure that Temporal retries later; from `check` 1 on (the wait's first check, its
        second...) it is `{"next_check_seconds": ...}` and the workflow's own timer waits,
        so the UI shows a wait, not failed attempts.

        The watcher (activities/gate_watcher.py) delivers a decision written into the file at
        once; this check is what remains for what it cannot see: a file without this run's mark
        (written by an earlier release, or rewritten without it), a worker without a running
        watcher, a change it missed. Those are checked again in BLOCK_POLL_SECONDS; a file this
        worker's watcher covers only every WATCHED_POLL_FACTOR x BLOCK_POLL_SECONDS (an hour
        at the default), so 2,000 parked pipelines cost 0.6 checks a second, not 6.7 (bench P7).

        Between checks nothing of the gate runs in the worker: the retry timer lives on the
        server (retries are not written to history), so a parked pipeline holds no activity slot
        and no memory here, and survives worker restarts by construction (docs/DESIGN.md). The
        known file is read; the queue is scanned only if it has moved.
        """
        info = activity.info()
        log = observability.activity_logger(build=build_name, task_id=task_id)
        if (check or info.attempt) == 1:
            log.info("waiting_for_resolution")
        queue = self.config.agent_task_dir

        def read() -> tuple[Path | None, dict[str, Any] | None]:
            path = Path(task_path) if task_path else None
            if path is None or not path.exists():
                path = task_files.find_task(queue, task_id)
            return path, task_files.load_task(path) if path else None

        try:
            path, task = await asyncio.to_thread(read)
        except TaskFileError as err:
            log.warning("task_read_error", error=str(err))
            path, task = None, None
        found = gate_files.file_decision(task) if task else None
        if found is not None and (
            changes_allowed or found["decision"] != task_files.CHANGES_REQUESTED
        ):
            log.info("blocks_resolved", decision=found["decision"])
            return found
        if task is None:
            log.warning("task_not_found")
        else:
            log.debug("still_waiting", status=str(task.get("status", "")))
        delay = self.config.block_poll_seconds
        if (
            path is not None
            and task is not None
            and self.watcher is not None
            and self.watcher.covers(path)
            and gate_files.gate_mark(task) == (info.workflow_id, info.workflow_run_id)
        ):
            delay *= WATCHED_POLL_FACTOR
        status = str(task.get("status", "")) if task else ""
        if check:
            return {"next_check_seconds": delay, "status": status}
        raise ApplicationError(
            f"task {task_id} is {status or 'not found'}; checking again in {delay:g}s",
            type=GATE_WAITING,
            next_retry_delay=timedelta(seconds=delay),
            category=ApplicationErrorCategory.BENIGN,
        )

    @activity.defn(name="summarize_workflow")
    async def summarize_workflow(
        self,
        workflow_id: str,
        build_name: str,
        started_at: str,
        completed_at: str,
        phases_completed: list[str],
        blocks_hit: int,
        flags_applied: int,
        plan_path: str,
        build_report_path: str,
        outcome: PipelineOutcome | None = None,
    ) -> str:
        """Write the run's summary YAML; returns its path."""
        if outcome is None:
            outcome = PipelineOutcome(outcome="success" if blocks_hit == 0 else "partial")
        rounds = [r.model_dump(exclude={"stage"} if not r.stage else set()) for r in outcome.rounds]
        summary: dict[str, Any] = {
            "workflow_id": workflow_id,
            "build_name": build_name,
            "started": started_at,
            "completed": completed_at,
            "phases_completed": list(phases_completed),
            "blocks_hit": blocks_hit,
            "flags_applied": flags_applied,
            "outcome": outcome.outcome,
            "plan_path": plan_path,
            "build_report_path": build_report_path,
            "task_ids": dict(outcome.task_ids),
            "audit_rounds": outcome.audit_rounds,
            "rounds": rounds,
            "usage": usage_summary(outcome),
        }
        if outcome.budget_usd is not None:
            summary["budget_usd"] = outcome.budget_usd
        if outcome.failed_stage or outcome.error:
            summary["failed_stage"] = outcome.failed_stage
            summary["error"] = outcome.error
        if outcome.skipped:
            summary["skipped"] = list(outcome.skipped)
        if outcome.resolution is not None:
            summary["resolution"] = outcome.resolution.model_dump()
        root = self.config.summary_dir
        try:
            path = task_files.inside(
                root, root / month_of(started_at) / summary_file_name(workflow_id)
            )
        except TaskFileError as err:
            raise task_file_failure(err) from None

        def write() -> None:
            task_files.ensure_private_dir(path.parent)
            task_files.write_text_atomic(path, task_files.dump_yaml(summary), 0o640)

        try:
            await asyncio.to_thread(write)
        except TaskFileError as err:
            raise ApplicationError(str(err), type=TASK_FILE_ERROR) from None
        observability.activity_logger().info(
            "summary_written", path=str(path), outcome=outcome.outcome
        )
        return str(path.resolve())

    # failure path --------------------------------------------------------------------------
    @activity.defn(name="end_pipeline")
    async def end_pipeline(
        self, workflow_id: str, build_name: str, outcome: str, message: str
    ) -> int:
        """Close the run's open task files (their tokens are dead) and tell the operator once."""
        log = observability.activity_logger(build=build_name)
        closed = await self._close_open_tasks(workflow_id, outcome)
        log.info("pipeline_ended", outcome=outcome, tasks_closed=closed)
        text = f"[{outcome.upper()}] {build_name}: {sanitize_finding(message, 1000)}"
        await notify_once(self.config, text, key=f"{activity.info().workflow_run_id}:end")
        return closed

    @activity.defn(name="close_pipeline_tasks")
    async def close_pipeline_tasks(self, workflow_id: str, outcome: str) -> int:
        """end_pipeline's clean-up on another host: the run's open task files there."""
        closed = await self._close_open_tasks(workflow_id, outcome)
        observability.activity_logger().info(
            "pipeline_tasks_closed", outcome=outcome, tasks_closed=closed
        )
        return closed

    @activity.defn(name="supersede_stage_tasks")
    async def supersede_stage_tasks(self, workflow_id: str, task_ids: list[str], note: str) -> int:
        """A rerun's clean-up on this host: the files of the stages it runs again, whatever
        their status, are `superseded` (their work is being redone; their tokens are dead)."""
        try:
            marked = await asyncio.to_thread(
                task_files.supersede_tasks, self.config.agent_task_dir, workflow_id, task_ids, note
            )
        except TaskFileError as err:
            observability.activity_logger().warning("task_supersede_failed", error=str(err))
            return 0
        observability.activity_logger().info("stage_tasks_superseded", tasks=len(marked))
        return len(marked)

    async def _close_open_tasks(self, workflow_id: str, outcome: str) -> int:
        kind = activity.info().workflow_type or "the workflow"
        note = f"{kind} ended ({outcome}); this task's token is no longer valid"
        try:
            closed = await asyncio.to_thread(
                task_files.close_open_tasks, self.config.agent_task_dir, workflow_id, note
            )
        except TaskFileError as err:
            observability.activity_logger().warning("task_close_failed", error=str(err))
            return 0
        return len(closed)
