"""What the Temporal UI shows: each activity's summary and the workflow's current details, read
with the real `temporal` CLI (`workflow metadata`, `workflow describe`, `workflow show`). The
approve command the details show is run verbatim."""

from __future__ import annotations

import base64
import json
import re

from temporalio.client import Client

import operator_view
from config import WorkerConfig
from harness.pipelines import PipelineScript, running_pipeline, status_of
from tests.helpers.checks import wait_for
from tests.helpers.cli import operator_env, shell, temporal_cli
from workflows.stages import TRIAGE


def test_summaries_and_commands() -> None:
    task_id = "3f2a9c1b-0000-5000-8000-000000000000"
    assert operator_view.agent_summary("implement", "dev", task_id) == (
        "implement · dev · task 3f2a9c1b"
    )
    assert operator_view.worker_summary("triage", "b1", TRIAGE.does) == (
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
    client: Client, config: WorkerConfig, address: str
) -> None:
    script = PipelineScript(blocks=["root login enabled"])
    async with running_pipeline(client, config, script.decide) as run:
        metadata_args = ["workflow", "metadata", "--workflow-id", run.handle.id]

        async def parked() -> bool:
            return "--name approve" in await temporal_cli(metadata_args, address)

        await wait_for(parked, 30, what="the approve command in the current details")
        metadata = await temporal_cli(metadata_args, address)
        assert "stage **awaiting-approval**" in metadata
        assert f"- task: `{run.task_id}` (file `{run.origin}`)" in metadata
        [approve] = re.findall(r"approve the blocks: `([^`]+)`", metadata)
        assert approve == operator_view.update_command(run.handle.id, "approve")
        described = json.loads(
            await temporal_cli(
                ["workflow", "describe", "--workflow-id", run.handle.id, "--output", "json"],
                address,
            )
        )
        # a wait, not an activity retrying: the file's check returned, and the details say
        # when the next one is due
        assert "pendingActivities" not in described
        assert "- next check of the task file: " in metadata

        await shell(approve, operator_env(address))  # copied from the details, run as it is
        result = await run.handle.result()
        status = await status_of(run.handle)
        # a closed workflow's metadata is a query too: a worker must be there to answer it
        done = await temporal_cli(metadata_args, address)
    assert result.status == "complete"
    assert status.resolution is not None and status.resolution.via == "update"
    assert "stage **done**" in done and "--name approve" not in done

    # the event history as the UI and `temporal workflow show` have it
    shown = json.loads(
        await temporal_cli(
            ["workflow", "show", "--workflow-id", run.handle.id, "--output", "json"], address
        )
    )
    summaries = {}
    for event in shown["events"]:
        if event["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED":
            name = event["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        elif event["eventType"] == "EVENT_TYPE_MARKER_RECORDED" and "userMetadata" in event:
            # a local activity's marker: its summary is the marker's, as the UI shows it
            details = event["markerRecordedEventAttributes"]["details"]
            name = json.loads(base64.b64decode(details["data"]["payloads"][0]["data"]))
            name = name["activity_type"]
        else:
            continue
        summaries[name] = json.loads(base64.b64decode(event["userMetadata"]["summary"]["data"]))
    ids = status.task_ids
    assert summaries == {
        "pipeline_settings": "settings · fixes this run's settings",
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
