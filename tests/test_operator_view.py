"""What the Temporal UI shows: each activity's summary and the workflow's current details, read
with the real `temporal` CLI (`workflow metadata`, `workflow describe`, `workflow show`). The
approve command the details show is run verbatim."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from pathlib import Path

from temporalio.client import Client

from config import WorkerConfig
from harness.agents import ScriptedAgent
from harness.env import BIN, TEMPORAL_BIN, cli_env, running_worker
from harness.pipelines import PipelineScript, originating_task, start_pipeline, status_of
from tests.helpers.checks import wait_for
from workflows import operator_view


async def temporal(address: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        TEMPORAL_BIN,
        *args,
        "--address",
        address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def test_summaries_and_commands() -> None:
    task_id = "3f2a9c1b-0000-5000-8000-000000000000"
    assert operator_view.agent_summary("implement", "dev", task_id) == (
        "implement · dev · task 3f2a9c1b"
    )
    assert operator_view.worker_summary("triage", "b1") == (
        "triage · b1 · reads the audit's triage-output.yml"
    )
    assert operator_view.update_command("a b'c", "approve") == (
        "temporal workflow update execute --workflow-id 'a b'\"'\"'c' --name approve"
    )
    details = operator_view.current_details(
        build_name="b1", stage="implement", agent="dev", task_id=task_id
    )
    assert details == (
        f"**b1** · stage **implement**\n\n- agent: `dev`\n"
        f"- task: `{task_id}` (file `$AGENT_TASK_DIR/*-3f2a9c1b.yml`)"
    )
    parked = operator_view.current_details(
        build_name="b1",
        stage="awaiting-approval",
        task_id="t-1",
        task_file="/q/t.yml",
        commands=operator_view.gate_commands("w1"),
    )
    assert "- task: `t-1` (file `/q/t.yml`)" in parked
    assert (
        "- approve the blocks: `temporal workflow update execute --workflow-id w1 --name approve`"
    ) in parked
    assert (
        "- reject the build: `temporal workflow update execute --workflow-id w1 --name "
        "reject`" in parked
    )


async def test_ui_shows_summaries_and_the_gate_commands(
    client: Client, config: WorkerConfig, address: str, tmp_path: Path
) -> None:
    task_id, origin = originating_task(config)
    script = PipelineScript(blocks=["root login enabled"])
    async with (
        running_worker(client, config),
        ScriptedAgent(config.agent_task_dir, address, script.decide),
    ):
        handle = await start_pipeline(client, config, task_id)

        async def parked() -> bool:
            return "--name approve" in await temporal(
                address, "workflow", "metadata", "--workflow-id", handle.id
            )

        await wait_for(parked, 30, what="the approve command in the current details")
        metadata = await temporal(address, "workflow", "metadata", "--workflow-id", handle.id)
        assert "stage **awaiting-approval**" in metadata
        assert f"- task: `{task_id}` (file `{origin}`)" in metadata
        [approve] = re.findall(r"approve the blocks: `([^`]+)`", metadata)
        assert approve == operator_view.update_command(handle.id, "approve")
        described = json.loads(
            await temporal(
                address, "workflow", "describe", "--workflow-id", handle.id, "--output", "json"
            )
        )
        pending = described["pendingActivities"]
        assert [a["activityType"]["name"] for a in pending] == ["wait_for_block_resolution"]

        # the operator copies the command from the details and runs it
        env = cli_env(address, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            approve,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        result = await handle.result()
        status = await status_of(handle)
        # a closed workflow's metadata is a query too: a worker must be there to answer it
        done = await temporal(address, "workflow", "metadata", "--workflow-id", handle.id)
    assert result.status == "complete"
    assert status.resolution is not None and status.resolution.via == "update"
    assert "stage **done**" in done and "--name approve" not in done

    # the event history as the UI and `temporal workflow show` have it
    shown = json.loads(
        await temporal(address, "workflow", "show", "--workflow-id", handle.id, "--output", "json")
    )
    summaries = {}
    for event in shown["events"]:
        if event["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED":
            name = event["activityTaskScheduledEventAttributes"]["activityType"]["name"]
            summaries[name] = json.loads(base64.b64decode(event["userMetadata"]["summary"]["data"]))
    ids = status.task_ids
    assert summaries == {
        "prefab_scaffolding": f"prefab · claudebox · task {ids['prefab'][:8]}",
        "implement_build": f"implement · dev · task {ids['implement'][:8]}",
        "request_security_audit": f"audit · security-agent · task {ids['audit'][:8]}",
        "process_triage_output": "triage · demo-build · reads the audit's triage-output.yml",
        "notify_blocks": "notify · demo-build · marks the originating task input-required, "
        "notifies per block",
        "wait_for_block_resolution": "awaiting-approval · demo-build · checks the originating "
        "task file",
        "close_build": f"close · dev · task {ids['close'][:8]}",
        "summarize_workflow": "summary · demo-build · writes the run's summary",
    }
