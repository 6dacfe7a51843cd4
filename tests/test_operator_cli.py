"""The operator's own `temporal` CLI on a running pipeline: `workflow cancel` ends it CANCELED
after the failure path; `activity complete` and `activity fail` finish an agent stage by hand."""

from __future__ import annotations

import asyncio
import json

import pytest
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import CancelledError

from config import WorkerConfig
from harness.pipelines import (
    PipelineRun,
    PipelineScript,
    dispatched,
    install_matrix_recorder,
    matrix_messages,
    running_pipeline,
    status_of,
    summaries,
    summary_of,
    update,
    wait_stage,
)
from tests.helpers.checks import failure_of, wait_for
from tests.helpers.cli import temporal_cli
from tests.helpers.histories import save_history

HOLD = 600.0


async def activity_by_hand(
    address: str, config: WorkerConfig, run: PipelineRun, task_type: str, verb: str, *args: str
) -> None:
    """`temporal activity <verb>` on the stage that dispatched `task_type`, once its task file
    is written, as an operator finishes a stage an agent cannot."""
    await wait_for(lambda: task_type in [t["task_type"] for t in dispatched(config)], 30)
    [task] = [t for t in dispatched(config) if t["task_type"] == task_type]
    activity = ["--workflow-id", run.handle.id, "--activity-id", task["payload"]["activity_id"]]
    await temporal_cli(["activity", verb, *activity, *args], address)


@pytest.mark.parametrize(
    ("where", "stage"),
    [("agent", "prefab"), ("gate", "awaiting-approval"), ("hold", "awaiting-retry")],
)
async def test_cancel_runs_the_failure_path(
    client: Client, config: WorkerConfig, address: str, where: str, stage: str
) -> None:
    record = install_matrix_recorder(config)
    script = {
        "agent": PipelineScript(ignore_task_types=("build_prefab",)),
        "gate": PipelineScript(blocks=["root login"]),
        "hold": PipelineScript(fail_task_type="build_plan"),
    }[where]
    async with running_pipeline(client, config, script.decide, failure_hold_seconds=HOLD) as run:
        await wait_stage(run.handle, stage)
        if where == "agent":
            await wait_for(lambda: len(dispatched(config)) == 1, 10)
        await temporal_cli(["workflow", "cancel", "--workflow-id", run.handle.id], address)
        with pytest.raises(WorkflowFailureError) as caught:
            await asyncio.wait_for(run.handle.result(), 60)
        await save_history(run.handle, f"pipeline_cancel_{where}_fewer_events")
        final = await status_of(run.handle)
        described = await run.handle.describe()
    assert isinstance(caught.value.cause, CancelledError)
    assert described.status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_CANCELED
    assert final.stage == "cancelled" and final.outcome == "cancelled"
    [summary] = summaries(config)
    assert summary["outcome"] == "cancelled"
    assert (
        summary["failed_stage"]
        == {"agent": "prefab", "gate": "awaiting-approval", "hold": "implement"}[where]
    )
    assert "cancelled by the operator" in summary["error"]
    tasks = dispatched(config)
    assert tasks and all(t["status"] == "cancelled" for t in tasks)
    assert tasks[-1]["history"][-1]["note"].startswith("BuildPipelineWorkflow ended (cancelled)")
    ends = [m["message"] for m in matrix_messages(record) if m["message"].startswith("[CANCELLED]")]
    assert len(ends) == 1 and "demo-build" in ends[0]


@pytest.mark.parametrize(
    ("result", "output"),
    [
        ('"done by hand"', "done by hand"),
        ('{"output": "/tmp/report.md", "by": "ops"}', "/tmp/report.md"),
        ('{"status": "success", "output": {"path": "/tmp/r"}}', '{"path": "/tmp/r"}'),
        ("42", "42"),
    ],
)
async def test_activity_complete_by_hand(
    client: Client, config: WorkerConfig, address: str, result: str, output: str
) -> None:
    """Any JSON result completes the stage; the close stage's output is the report path."""
    script = PipelineScript(ignore_task_types=("build_closeout",))
    async with running_pipeline(client, config, script.decide) as run:
        await activity_by_hand(
            address, config, run, "build_closeout", "complete", "--result", result
        )
        done = await asyncio.wait_for(run.handle.result(), 60)
    assert done.status == "complete"
    summary = summary_of(done.summary_path)
    assert summary["outcome"] == "success" and summary["phases_completed"][-1] == "close"
    assert summary["build_report_path"] == output


async def test_unreadable_completion_takes_the_stage_failure_path(
    client: Client, config: WorkerConfig, address: str
) -> None:
    record = install_matrix_recorder(config)
    script = PipelineScript(ignore_task_types=("build_prefab",))
    async with running_pipeline(client, config, script.decide) as run:
        maybe = '{"status": "maybe"}'
        await activity_by_hand(address, config, run, "build_prefab", "complete", "--result", maybe)
        cause = await failure_of(run.handle)
    assert cause.type == "StageFailedError"
    summary = summary_of(cause.message.split("(summary: ")[1].rstrip(")"))
    assert summary["failed_stage"] == "prefab"
    assert summary["error"] == "the prefab stage was completed with status 'maybe'"
    assert len([m for m in matrix_messages(record) if m["message"].startswith("[FAILED]")]) == 1


async def test_activity_fail_by_hand_holds(
    client: Client, config: WorkerConfig, address: str
) -> None:
    script = PipelineScript(ignore_task_types=("build_plan",))
    async with running_pipeline(client, config, script.decide, failure_hold_seconds=HOLD) as run:
        reason = ["--reason", "the agent's host died", "--detail", json.dumps("no details")]
        await activity_by_hand(address, config, run, "build_plan", "fail", *reason)
        await wait_stage(run.handle, "awaiting-retry")
        status = await status_of(run.handle)
        assert status.failed_stage == "implement"
        assert "the agent's host died" in status.failed_error
        code, out = await update(address, run.handle.id, "abort")
        assert code == 0, out
        cause = await failure_of(run.handle)
    assert "the agent's host died; aborted by the operator" in cause.message


async def test_approve_takes_a_bare_note(
    client: Client, config: WorkerConfig, address: str
) -> None:
    """`--input '"ok"'` is the note, for the gate's updates as for the hold's."""
    script = PipelineScript(blocks=["debug port open"])
    async with running_pipeline(client, config, script.decide) as run:
        await wait_stage(run.handle, "awaiting-approval")
        code, out = await update(address, run.handle.id, "approve", '"ok by me"')
        assert code == 0, out
        done = await asyncio.wait_for(run.handle.result(), 60)
    resolution = summary_of(done.summary_path)["resolution"]
    assert (resolution["via"], resolution["note"], resolution["by"]) == (
        "update",
        "ok by me",
        "operator",
    )
