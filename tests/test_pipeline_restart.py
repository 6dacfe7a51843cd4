"""The block gate survives the worker: kill -9 while a pipeline is parked, restart, approve."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from temporalio.client import Client

from config import WorkerConfig
from harness.pipelines import (
    PipelineScript,
    approve_by_file,
    dispatched,
    running_pipeline,
    summary_of,
    wait_stage,
)
from harness.worker_process import WorkerProcess, worker_env
from models import DecisionInput
from tests.helpers.histories import save_history
from tests.helpers.queue import PIPELINE_TASK_TYPES


@pytest.mark.parametrize("approval", ["update", "task-file"])
async def test_kill_9_while_parked_then_approve(
    client: Client, config: WorkerConfig, approval: str, tmp_path: Path
) -> None:
    script = PipelineScript(blocks=["world-writable socket"], flags=["pin the image"])
    worker = WorkerProcess(worker_env(config, BLOCK_POLL_SECONDS="0.5"), tmp_path / "logs")
    async with running_pipeline(client, config, script.decide, worker) as run:
        await wait_stage(run.handle, "awaiting-approval")
        pid = worker.pid
        await worker.kill9()
        with pytest.raises(ProcessLookupError):  # SIGKILLed and gone
            os.kill(pid, 0)
        await worker.start()
        if approval == "update":
            await run.handle.execute_update("approve", DecisionInput(note="after restart"))
        else:
            approve_by_file(run.origin, actor="carol", note="after restart")
        result = await run.handle.result()
        name = f"pipeline_restart_{approval.replace('-', '_')}_fewer_events"
        await save_history(run.handle, name)
    assert result.status == "complete"
    summary = summary_of(result.summary_path)
    assert summary["resolution"]["via"] == approval
    assert summary["resolution"]["note"] == "after restart"
    assert [t["task_type"] for t in dispatched(config)] == PIPELINE_TASK_TYPES
