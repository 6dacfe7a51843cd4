"""The block gate survives the worker: kill -9 while a pipeline is parked, restart, approve."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from temporalio.client import Client

from config import WorkerConfig
from harness.agents import ScriptedAgent
from harness.pipelines import (
    PipelineScript,
    approve_by_file,
    dispatched,
    originating_task,
    start_pipeline,
    summary_of,
    wait_stage,
)
from harness.worker_process import WorkerProcess, worker_env
from models import DecisionInput
from tests.helpers.histories import save_history


@pytest.mark.parametrize("approval", ["update", "task-file"])
async def test_kill_9_while_parked_then_approve(
    client: Client, config: WorkerConfig, address: str, approval: str, tmp_path: Path
) -> None:
    task_id, origin = originating_task(config)
    script = PipelineScript(blocks=["world-writable socket"], flags=["pin the image"])
    env = worker_env(config, BLOCK_POLL_SECONDS="0.5")
    async with (
        WorkerProcess(env, tmp_path / "logs") as worker,
        ScriptedAgent(config.agent_task_dir, address, script.decide),
    ):
        handle = await start_pipeline(client, config, task_id)

        await wait_stage(handle, "awaiting-approval")
        pid = worker.pid
        await worker.kill9()
        with pytest.raises(ProcessLookupError):  # SIGKILLed and gone
            os.kill(pid, 0)
        await worker.start()
        if approval == "update":
            await handle.execute_update("approve", DecisionInput(note="after restart"))
        else:
            approve_by_file(origin, actor="carol", note="after restart")
        result = await handle.result()
        await save_history(handle, f"pipeline_restart_{approval.replace('-', '_')}")
    assert result.status == "complete"
    summary = summary_of(result.summary_path)
    assert summary["resolution"]["via"] == approval
    assert summary["resolution"]["note"] == "after restart"
    kinds = [t["task_type"] for t in dispatched(config)]
    assert kinds == [
        "build_prefab",
        "build_plan",
        "security_audit",
        "security_fix",
        "build_closeout",
    ]
