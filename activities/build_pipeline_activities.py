"""BuildPipelineWorkflow's activities, thin over the task-file module.

Agent stages (prefab, implement, audit, fixes, close) write a task file and wait for the agent's
completion; the others run here: triage parsing, block notification, the block gate's poller,
the summary, and the failure path's clean-up. Activity names and positional arguments are the
original's; new trailing arguments have defaults.
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
from activities import instructions, task_files
from activities.dispatch import dispatch_to_agent
from activities.gate_watcher import GateWatcher
from activities.notify import notify_once
from activities.triage import MAX_TRIAGE_BYTES, parse_triage, sanitize_finding
from config import WorkerConfig
from exceptions import TASK_FILE_ERROR, TRIAGE_MALFORMED, TaskFileError, TriageError
from models import (
    AUDIT_AGENT,
    PREFAB_AGENT,
    BuildPhaseResult,
    Features,
    PipelineOutcome,
    PipelineSettings,
    TriageOutput,
)

TRIAGE_FILE = "triage-output.yml"
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


def month_of(started_at: str) -> str:
    try:
        return datetime.fromisoformat(started_at.replace("Z", "+00:00")).strftime("%Y-%m")
    except ValueError:
        return datetime.now(UTC).strftime("%Y-%m")


def _inside(root: Path, path: Path) -> Path:
    """`path`, after checking it resolves inside `root` (build names are checked upstream too)."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ApplicationError(
            f"refusing to write outside {root}: {path}", type=TASK_FILE_ERROR, non_retryable=True
        )
    return path


def _task_file_failure(err: TaskFileError) -> ApplicationError:
    return ApplicationError(str(err), type=TASK_FILE_ERROR, non_retryable=True)


class PipelineActivities:
    def __init__(self, config: WorkerConfig, watcher: GateWatcher | None = None) -> None:
        self.config = config
        self.watcher = watcher

    def _audit_dir(self, build_name: str) -> Path:
        return _inside(self.config.audit_dir, self.config.audit_dir / build_name)

    async def _dispatch(self, **kwargs: Any) -> BuildPhaseResult:
        try:
            await dispatch_to_agent(self.config.agent_task_dir, **kwargs)
        except TaskFileError as err:
            raise _task_file_failure(err) from None

    # 0 ---------------------------------------------------------------------------------------
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
        )

    # 1 ---------------------------------------------------------------------------------------
    @activity.defn(name="prefab_scaffolding")
    async def prefab_scaffolding(
        self, build_name: str, plan_path: str, operator_note: str = ""
    ) -> BuildPhaseResult:
        return await self._dispatch(
            stage="prefab",
            target_agent=PREFAB_AGENT,
            task_type="build_prefab",
            summary=f"Prefab scaffolding for build '{build_name}'",
            payload={
                "build_name": build_name,
                "plan_path": plan_path,
                "instruction": instructions.prefab(build_name, plan_path),
            },
            operator_note=operator_note,
            log_event="prefab_dispatched",
            build=build_name,
        )

    # 2 ---------------------------------------------------------------------------------------
    @activity.defn(name="implement_build")
    async def implement_build(
        self,
        build_name: str,
        originating_task_id: str,
        target_agent: str,
        plan_path: str = "",
        operator_note: str = "",
    ) -> BuildPhaseResult:
        return await self._dispatch(
            stage="implement",
            target_agent=target_agent,
            task_type="build_plan",
            summary=f"Implement build: {build_name}",
            payload={
                "build_name": build_name,
                "originating_task_id": originating_task_id,
                "plan_path": plan_path,
                "instruction": instructions.implement(build_name, plan_path),
            },
            operator_note=operator_note,
            log_event="build_dispatched",
            build=build_name,
            agent=target_agent,
        )

    # 3 ---------------------------------------------------------------------------------------
    @activity.defn(name="request_security_audit")
    async def request_security_audit(
        self, build_name: str, plan_path: str, operator_note: str = ""
    ) -> BuildPhaseResult:
        audit_dir = self._audit_dir(build_name)
        request_path = audit_dir / "request.md"
        text = instructions.audit_request(
            build_name, plan_path, str(audit_dir), datetime.now(UTC).strftime("%Y-%m-%d")
        )

        def prepare() -> Path | None:
            task_files.ensure_private_dir(audit_dir)
            stale = audit_dir / TRIAGE_FILE
            moved = None
            if stale.exists():
                stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
                moved = audit_dir / f"triage-output.stale-{stamp}.yml"
                stale.replace(moved)
            task_files.write_text_atomic(request_path, text, 0o640)
            return moved

        try:
            moved = await asyncio.to_thread(prepare)
        except (TaskFileError, OSError) as err:
            raise ApplicationError(
                f"cannot prepare the audit request in {audit_dir}: {err}",
                type=TASK_FILE_ERROR,
                non_retryable=True,
            ) from None
        if moved is not None:
            observability.activity_logger().info("stale_triage_moved", file=moved.name)
        return await self._dispatch(
            stage="audit",
            target_agent=AUDIT_AGENT,
            task_type="security_audit",
            summary=f"Security audit for build '{build_name}'",
            payload={
                "build_name": build_name,
                "plan_path": plan_path,
                "audit_request_path": str(request_path),
                "output_dir": str(audit_dir),
                "instruction": instructions.audit(build_name, str(request_path)),
            },
            operator_note=operator_note,
            log_event="audit_dispatched",
            build=build_name,
            request_path=str(request_path),
        )

    # 4 ---------------------------------------------------------------------------------------
    @activity.defn(name="process_triage_output")
    async def process_triage_output(self, build_name: str) -> TriageOutput:
        path = self._audit_dir(build_name) / TRIAGE_FILE

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
        return triage

    # 5 ---------------------------------------------------------------------------------------
    @activity.defn(name="apply_flag_fixes")
    async def apply_flag_fixes(
        self, build_name: str, flags: list[str], target_agent: str, operator_note: str = ""
    ) -> BuildPhaseResult:
        return await self._dispatch(
            stage="fixes",
            target_agent=target_agent,
            task_type="security_fix",
            summary=f"Apply security flag fixes for build '{build_name}' ({len(flags)} items)",
            payload={
                "build_name": build_name,
                "flags": [sanitize_finding(f) for f in flags],
                "instruction": instructions.fixes(build_name, flags),
            },
            operator_note=operator_note,
            log_event="flags_dispatched",
            build=build_name,
            agent=target_agent,
            flag_count=len(flags),
        )

    # 6 ---------------------------------------------------------------------------------------
    @activity.defn(name="notify_blocks")
    async def notify_blocks(self, build_name: str, task_id: str, blocks: list[str]) -> str:
        """Mark the originating task `input-required`, then notify once per block.

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
        for i, block in enumerate(blocks, start=1):
            message = (
                f"[ACTION] {build_name}: block {i}/{n} needs review\n\n"
                f"{sanitize_finding(block)}\n\n{how}"
            )
            await notify_once(self.config, message, key=f"{info.workflow_run_id}:block:{i}")
            activity.heartbeat(i)  # a killed worker is noticed in a minute, not 30
            log.info("block_notified", index=i, total=n)
        return str(path) if path else ""

    # 7 ---------------------------------------------------------------------------------------
    @activity.defn(name="wait_for_block_resolution")
    async def wait_for_block_resolution(
        self, build_name: str, task_id: str, task_path: str = ""
    ) -> dict[str, str]:
        """Check the originating task file once: its decision when `approved` (or `rejected`),
        else a benign failure that Temporal retries later: the fallback behind the watcher.

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
        if info.attempt == 1:
            log.info("waiting_for_resolution")
        queue = self.config.agent_task_dir

        def check() -> tuple[Path | None, dict[str, Any] | None]:
            path = Path(task_path) if task_path else None
            if path is None or not path.exists():
                path = task_files.find_task(queue, task_id)
            return path, task_files.load_task(path) if path else None

        try:
            path, task = await asyncio.to_thread(check)
        except TaskFileError as err:
            log.warning("task_read_error", error=str(err))
            path, task = None, None
        found = task_files.file_decision(task) if task else None
        if found is not None:
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
            and task_files.gate_mark(task) == (info.workflow_id, info.workflow_run_id)
        ):
            delay *= WATCHED_POLL_FACTOR
        status = str(task.get("status", "")) if task else ""
        raise ApplicationError(
            f"task {task_id} is {status or 'not found'}; checking again in {delay:g}s",
            type=GATE_WAITING,
            next_retry_delay=timedelta(seconds=delay),
            category=ApplicationErrorCategory.BENIGN,
        )

    # 8 ---------------------------------------------------------------------------------------
    @activity.defn(name="close_build")
    async def close_build(
        self, build_name: str, target_agent: str, operator_note: str = ""
    ) -> BuildPhaseResult:
        return await self._dispatch(
            stage="close",
            target_agent=target_agent,
            task_type="build_closeout",
            summary=f"Close out build '{build_name}'",
            payload={
                "build_name": build_name,
                "instruction": instructions.close(build_name),
            },
            operator_note=operator_note,
            log_event="closeout_dispatched",
            build=build_name,
            agent=target_agent,
        )

    # 9 ---------------------------------------------------------------------------------------
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
        }
        if outcome.failed_stage or outcome.error:
            summary["failed_stage"] = outcome.failed_stage
            summary["error"] = outcome.error
        if outcome.skipped:
            summary["skipped"] = list(outcome.skipped)
        if outcome.resolution is not None:
            summary["resolution"] = outcome.resolution.model_dump()
        root = self.config.summary_dir
        path = _inside(root, root / month_of(started_at) / summary_file_name(workflow_id))

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

    async def _close_open_tasks(self, workflow_id: str, outcome: str) -> int:
        note = f"BuildPipelineWorkflow ended ({outcome}); this task's token is no longer valid"
        try:
            closed = await asyncio.to_thread(
                task_files.close_open_tasks, self.config.agent_task_dir, workflow_id, note
            )
        except TaskFileError as err:
            observability.activity_logger().warning("task_close_failed", error=str(err))
            return 0
        return len(closed)
