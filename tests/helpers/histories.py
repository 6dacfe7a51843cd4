"""Recorded histories: `RECORD_HISTORIES=1 pytest` refreshes them, the replay tests read them."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, WorkflowReplayResult

from workflows.build_pipeline_workflow import BuildPipelineWorkflow
from workflows.build_plan import BuildPlanWorkflow

HISTORIES = Path(__file__).resolve().parent.parent / "histories"
RECORDED = sorted(HISTORIES.glob("*.json"))


async def save_history(handle: WorkflowHandle, name: str) -> None:
    """Keep this run's history when recording; a no-op in normal runs."""
    if os.environ.get("RECORD_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json())


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))


async def replay(path: Path, *, sandboxed: bool = True) -> WorkflowReplayResult:
    """Replay one recorded history on today's workflow code, with the worker's converter;
    `sandboxed=False` runs the workflow code on the real modules, which a test can watch."""
    workflows: list[type] = [BuildPipelineWorkflow, BuildPlanWorkflow]
    if sandboxed:
        replayer = Replayer(workflows=workflows, data_converter=pydantic_data_converter)
    else:
        replayer = Replayer(
            workflows=workflows,
            data_converter=pydantic_data_converter,
            workflow_runner=UnsandboxedWorkflowRunner(),
        )
    return await replayer.replay_workflow(load(path), raise_on_replay_failure=False)


def build_stages(history: WorkflowHistory) -> list[str]:
    """The BuildStage values a run upserted, in order."""
    values = []
    for event in history.events:
        if event.HasField("upsert_workflow_search_attributes_event_attributes"):
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            if "BuildStage" in fields.indexed_fields:
                values.append(json.loads(fields.indexed_fields["BuildStage"].data))
    return values


def activities_run(history: WorkflowHistory) -> list[tuple[str, str]]:
    """Each activity the run scheduled or ran locally, in order, as (type, how): how is the
    task queue it was scheduled on, or "local"."""
    runs = []
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled = event.activity_task_scheduled_event_attributes
            runs.append((scheduled.activity_type.name, scheduled.task_queue.name))
        elif event.marker_recorded_event_attributes.marker_name == "core_local_activity":
            data = event.marker_recorded_event_attributes.details["data"].payloads[0].data
            runs.append((json.loads(data)["activity_type"], "local"))
    return runs


def workflow_type(path: Path) -> str:
    events = json.loads(path.read_text())["events"]
    started = events[0]["workflowExecutionStartedEventAttributes"]
    return str(started["workflowType"]["name"])


def patch_markers(path: Path) -> list[str]:
    """The patch ids whose markers the history holds, in order."""
    ids = []
    for event in json.loads(path.read_text())["events"]:
        marker = event.get("markerRecordedEventAttributes")
        if marker and marker.get("markerName") == "core_patch":
            for payload in marker["details"]["patch-data"]["payloads"]:
                ids.append(json.loads(base64.b64decode(payload["data"]))["id"])
    return ids
