"""BuildPipelineWorkflow's five agent stages: prefab, implement, audit, fixes and close-out.

Each stage writes a task file and leaves its activity open until the agent completes it
(activities/dispatch.py). They differ only in what the file says, so each stage is one row of
`AgentStage` (its task type, summary and log event) and a payload. Activity names and positional
arguments are the original's; new trailing arguments have defaults.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

import observability
from activities import instructions, task_files
from activities.dispatch import dispatch_to_agent
from activities.triage import sanitize_finding
from config import WorkerConfig
from exceptions import TASK_FILE_ERROR, TaskFileError
from models import AUDIT_AGENT, PREFAB_AGENT, AgentCompletion

TRIAGE_FILE = "triage-output.yml"
REPORT_FILE = "report.md"


@dataclass(frozen=True)
class AgentStage:
    """What a stage's task file and log line say, apart from its payload."""

    stage: str
    task_type: str
    summary: str  # formatted with `build` (the build name) and `count` (the flags)
    log_event: str


PREFAB = AgentStage(
    "prefab", "build_prefab", "Prefab scaffolding for build '{build}'", "prefab_dispatched"
)
IMPLEMENT = AgentStage("implement", "build_plan", "Implement build: {build}", "build_dispatched")
AUDIT = AgentStage(
    "audit", "security_audit", "Security audit for build '{build}'", "audit_dispatched"
)
FIXES = AgentStage(
    "fixes",
    "security_fix",
    "Apply security flag fixes for build '{build}' ({count} items)",
    "flags_dispatched",
)
CHANGES = AgentStage(
    "fixes",
    "security_fix",
    "Apply requested changes for build '{build}' ({count} items)",
    "changes_dispatched",
)
CLOSE = AgentStage("close", "build_closeout", "Close out build '{build}'", "closeout_dispatched")
# apply_flag_fixes' `request`: auto-fixable flags, or the blocks the operator asked to be fixed
FLAGS_REQUEST = "flags"
CHANGES_REQUEST = "changes-requested"


def audit_dir(config: WorkerConfig, build_name: str) -> Path:
    """The build's audit directory, refused (TaskFileError) if the name would leave AUDIT_DIR."""
    return task_files.inside(config.audit_dir, config.audit_dir / build_name)


def task_file_failure(err: TaskFileError) -> ApplicationError:
    """A task file that cannot be written fails the stage at once: a retry writes no better."""
    return ApplicationError(str(err), type=TASK_FILE_ERROR, non_retryable=True)


class AgentStageActivities:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config

    async def _dispatch(
        self,
        row: AgentStage,
        build_name: str,
        target_agent: str,
        operator_note: str,
        payload: dict[str, Any],
        budget: float | None = None,
        **log_fields: Any,
    ) -> AgentCompletion:
        count = len(payload.get("flags", ()))
        if budget is not None:  # what the pipeline may still spend, for the agent to cap itself
            payload = {**payload, "budget_remaining_usd": budget}
        try:
            await dispatch_to_agent(
                self.config.agent_task_dir,
                stage=row.stage,
                target_agent=target_agent,
                task_type=row.task_type,
                summary=row.summary.format(build=build_name, count=count),
                payload={"build_name": build_name, **payload},
                operator_note=operator_note,
                log_event=row.log_event,
                build=build_name,
                **log_fields,
            )
        except TaskFileError as err:
            raise task_file_failure(err) from None

    @activity.defn(name="prefab_scaffolding")
    async def prefab_scaffolding(
        self,
        build_name: str,
        plan_path: str,
        operator_note: str = "",
        budget_remaining_usd: float | None = None,
    ) -> AgentCompletion:
        text = instructions.prefab(build_name, plan_path)
        payload = {"plan_path": plan_path, "instruction": text}
        return await self._dispatch(
            PREFAB, build_name, PREFAB_AGENT, operator_note, payload, budget_remaining_usd
        )

    @activity.defn(name="implement_build")
    async def implement_build(
        self,
        build_name: str,
        originating_task_id: str,
        target_agent: str,
        plan_path: str = "",
        operator_note: str = "",
        budget_remaining_usd: float | None = None,
    ) -> AgentCompletion:
        payload = {
            "originating_task_id": originating_task_id,
            "plan_path": plan_path,
            "instruction": instructions.implement(build_name, plan_path),
        }
        return await self._dispatch(
            IMPLEMENT,
            build_name,
            target_agent,
            operator_note,
            payload,
            budget_remaining_usd,
            agent=target_agent,
        )

    @activity.defn(name="request_security_audit")
    async def request_security_audit(
        self,
        build_name: str,
        plan_path: str,
        operator_note: str = "",
        audit_round: int = 1,
        budget_remaining_usd: float | None = None,
    ) -> AgentCompletion:
        """Write the audit request (moving aside a triage file left by an earlier audit, which
        the triage stage would otherwise read as this one's), then dispatch the audit. From
        round 2 on, the previous round's report.md is kept as `report-round-<n>.md` and the
        request points at it."""
        try:
            directory = audit_dir(self.config, build_name)
        except TaskFileError as err:
            raise task_file_failure(err) from None
        request_path = directory / "request.md"
        previous = directory / f"report-round-{audit_round - 1}.md"
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        text = instructions.audit_request(
            build_name, plan_path, str(directory), today, audit_round, str(previous)
        )

        def prepare() -> Path | None:
            task_files.ensure_private_dir(directory)
            stale = directory / TRIAGE_FILE
            moved = None
            if stale.exists():
                stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
                moved = directory / f"triage-output.stale-{stamp}.yml"
                stale.replace(moved)
            report = directory / REPORT_FILE
            if audit_round > 1 and report.exists():  # a retried dispatch finds it moved
                report.replace(previous)
            task_files.write_text_atomic(request_path, text, 0o640)
            return moved

        try:
            moved = await asyncio.to_thread(prepare)
        except (TaskFileError, OSError) as err:
            raise ApplicationError(
                f"cannot prepare the audit request in {directory}: {err}",
                type=TASK_FILE_ERROR,
                non_retryable=True,
            ) from None
        if moved is not None:
            observability.activity_logger().info("stale_triage_moved", file=moved.name)
        payload: dict[str, Any] = {
            "plan_path": plan_path,
            "audit_request_path": str(request_path),
            "output_dir": str(directory),
            "instruction": instructions.audit(build_name, str(request_path), audit_round),
        }
        if audit_round > 1:
            payload["audit_round"] = audit_round
            payload["previous_report_path"] = str(previous)
        return await self._dispatch(
            AUDIT,
            build_name,
            AUDIT_AGENT,
            operator_note,
            payload,
            budget_remaining_usd,
            request_path=str(request_path),
        )

    @activity.defn(name="apply_flag_fixes")
    async def apply_flag_fixes(
        self,
        build_name: str,
        flags: list[str],
        target_agent: str,
        operator_note: str = "",
        request: str = FLAGS_REQUEST,
        budget_remaining_usd: float | None = None,
    ) -> AgentCompletion:
        """The flags to fix; with `request` "changes-requested", the blocks the operator asked
        at the gate to be fixed, and their note in the instruction (not as a retry's note)."""
        payload: dict[str, Any] = {"flags": [sanitize_finding(f) for f in flags]}
        row = FIXES
        if request == CHANGES_REQUEST:
            note = sanitize_finding(operator_note) if operator_note else ""
            payload["instruction"] = instructions.changes(build_name, flags, note)
            payload["request"] = CHANGES_REQUEST
            if note:
                payload["operator_note"] = note
            row, operator_note = CHANGES, ""
        else:
            payload["instruction"] = instructions.fixes(build_name, flags)
        return await self._dispatch(
            row,
            build_name,
            target_agent,
            operator_note,
            payload,
            budget_remaining_usd,
            agent=target_agent,
            flag_count=len(flags),
        )

    @activity.defn(name="close_build")
    async def close_build(
        self,
        build_name: str,
        target_agent: str,
        operator_note: str = "",
        budget_remaining_usd: float | None = None,
    ) -> AgentCompletion:
        payload = {"instruction": instructions.close(build_name)}
        return await self._dispatch(
            CLOSE,
            build_name,
            target_agent,
            operator_note,
            payload,
            budget_remaining_usd,
            agent=target_agent,
        )
