"""The operator's own `temporal` CLI on a running pipeline: `workflow cancel` ends it CANCELED
after the failure path; `activity complete` and `activity fail` finish an agent stage by hand."""

from __future__ import annotations

import asyncio
import json

import pytest
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError

from config import WorkerConfig
from harness.agents import ScriptedAgent
from harness.env import running_worker
from harness.pipelines import (
    PipelineScript,
    dispatched,
    install_matrix_recorder,
    matrix_messages,
    originating_task,
    start_pipeline,
    status_of,
    summaries,
    summary_of,
    temporal,
    update,
    wait_stage,
)
from tests.helpers.checks import wait_for
from tests.helpers.histories import save_history

HOLD = 600.0


@pytest.mark.parametrize(
    ("where", "stage"),
    [("agent", "prefab"), ("gate", "awaiting-approval"), ("hold", "awaiting-retry")],
)
async def test_cancel_runs_the_failure_path(
    client: Client, config: WorkerConfig, address: str, where: str, stage: str
) -> None:
    record = install_matrix_recorder(config)
    task_id, _ = originating_task(config)
    script = {
        "agent": PipelineScript(ignore_task_types=("build_prefab",)),
        "gate": PipelineScript(blocks=["root login"]),
        "hold": PipelineScript(fail_task_type="build_plan"),
    }[where]
    async with (
        running_worker(client, config),
        ScriptedAgent(config.agent_task_dir, address, script.decide),
    ):
        handle = await start_pipeline(client, config, task_id, failure_hold_seconds=HOLD)
        await wait_stage(handle, stage)
        if where == "agent":
            await wait_for(lambda: len(dispatched(config)) == 1, 10)
        code, out, err = await temporal(address, "workflow", "cancel", "--workflow-id", handle.id)
        assert code == 0, out + err
        with pytest.raises(WorkflowFailureError) as caught:
            await asyncio.wait_for(handle.result(), 60)
        await save_history(handle, f"pipeline_cancel_{where}")
        final = await status_of(handle)
        described = await handle.describe()
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
    task_id, _ = originating_task(config)
    script = PipelineScript(ignore_task_types=("build_closeout",))
    async with (
        running_worker(client, config),
        ScriptedAgent(config.agent_task_dir, address, script.decide),
    ):
        handle = await start_pipeline(client, config, task_id)
        await wait_for(lambda: "build_closeout" in [t["task_type"] for t in dispatched(config)], 30)
        close = dispatched(config)[-1]
        code, out, err = await temporal(
            address,
            "activity",
            "complete",
            "--workflow-id",
            handle.id,
            "--activity-id",
            close["payload"]["activity_id"],
            "--result",
            result,
        )
        assert code == 0, out + err
        done = await asyncio.wait_for(handle.result(), 60)
    assert done.status == "complete"
    summary = summary_of(done.summary_path)
    assert summary["outcome"] == "success" and summary["phases_completed"][-1] == "close"
    assert summary["build_report_path"] == output


async def test_unreadable_completion_takes_the_stage_failure_path(
    client: Client, config: WorkerConfig, address: str
) -> None:
    record = install_matrix_recorder(config)
    task_id, _ = originating_task(config)
    script = PipelineScript(ignore_task_types=("build_prefab",))
    async with (
        running_worker(client, config),
        ScriptedAgent(config.agent_task_dir, address, script.decide),
    ):
        handle = await start_pipeline(client, config, task_id)
        await wait_for(lambda: len(dispatched(config)) == 1, 30)
        code, out, err = await temporal(
            address,
            "activity",
            "complete",
            "--workflow-id",
            handle.id,
            "--activity-id",
            dispatched(config)[0]["payload"]["activity_id"],
            "--result",
            '{"status": "maybe"}',
        )
        assert code == 0, out + err
        with pytest.raises(WorkflowFailureError) as caught:
            await asyncio.wait_for(handle.result(), 60)
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "StageFailedError"
    summary = summary_of(cause.message.split("(summary: ")[1].rstrip(")"))
    assert summary["failed_stage"] == "prefab"
    assert summary["error"] == "the prefab stage was completed with status 'maybe'"
    assert len([m for m in matrix_messages(record) if m["message"].startswith("[FAILED]")]) == 1


async def test_activity_fail_by_hand_holds(
    client: Client, config: WorkerConfig, address: str
) -> None:
    task_id, _ = originating_task(config)
    script = PipelineScript(ignore_task_types=("build_plan",))
    async with (
        running_worker(client, config),
        ScriptedAgent(config.agent_task_dir, address, script.decide),
    ):
        handle = await start_pipeline(client, config, task_id, failure_hold_seconds=HOLD)
        await wait_for(lambda: "build_plan" in [t["task_type"] for t in dispatched(config)], 30)
        implement = dispatched(config)[-1]
        code, out, err = await temporal(
            address,
            "activity",
            "fail",
            "--workflow-id",
            handle.id,
            "--activity-id",
            implement["payload"]["activity_id"],
            "--reason",
            "the agent's host died",
            "--detail",
            json.dumps("no details"),
        )
        assert code == 0, out + err
        await wait_stage(handle, "awaiting-retry")
        status = await status_of(handle)
        assert status.failed_stage == "implement"
        assert "the agent's host died" in status.failed_error
        code, out, err = await temporal(
            address, "workflow", "update", "execute", "--workflow-id", handle.id, "--name", "abort"
        )
        assert code == 0, out + err
        with pytest.raises(WorkflowFailureError) as caught:
            await asyncio.wait_for(handle.result(), 60)
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError)
    assert "the agent's host died; aborted by the operator" in cause.message


async def test_approve_takes_a_bare_note(
    client: Client, config: WorkerConfig, address: str
) -> None:
    """`--input '"ok"'` is the note, for the gate's updates as for the hold's."""
    task_id, _ = originating_task(config)
    script = PipelineScript(blocks=["debug port open"])
    async with (
        running_worker(client, config),
        ScriptedAgent(config.agent_task_dir, address, script.decide),
    ):
        handle = await start_pipeline(client, config, task_id)
        await wait_stage(handle, "awaiting-approval")
        code, out = await update(address, handle.id, "approve", '"ok by me"')
        assert code == 0, out
        done = await asyncio.wait_for(handle.result(), 60)
    resolution = summary_of(done.summary_path)["resolution"]
    assert (resolution["via"], resolution["note"], resolution["by"]) == (
        "update",
        "ok by me",
        "operator",
    )
