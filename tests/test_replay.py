"""Replay recorded histories against today's workflow code: a change that breaks determinism
for pipelines already running fails here, not in production.

The histories under tests/histories/ were recorded from real runs of the pipeline and plan
tests against the dev server (`RECORD_HISTORIES=1 pytest tests/test_pipeline.py ...`).
"""

from __future__ import annotations

import json

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.helpers.histories import HISTORIES
from workflows.build_pipeline_workflow import BuildPipelineWorkflow
from workflows.build_plan import BuildPlanWorkflow

RECORDED = sorted(HISTORIES.glob("*.json"))


def test_histories_are_recorded() -> None:
    names = {p.stem for p in RECORDED}
    assert {
        "pipeline_no_findings",
        "pipeline_flags_only",
        "pipeline_blocks_file_approval",
        "pipeline_blocks_update_approval",
        "pipeline_rejected",
        "pipeline_agent_failed",
        "pipeline_restart_task_file",
        "pipeline_restart_update",
        "pipeline_heartbeat_timeout",
        "plan_heartbeat_timeout",
        "pipeline_watcher_approved",
        "pipeline_watcher_rejected",
        "plan_two_phases",
        "plan_phase_failed",
        "pipeline_two_hosts",
        "plan_two_hosts",
        "pipeline_hold_retry",
        "pipeline_hold_skip",
        "pipeline_hold_abort",
        "pipeline_cancel_agent",
        "pipeline_cancel_gate",
        "pipeline_cancel_hold",
    } <= names


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.stem)
async def test_replay(path) -> None:
    history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
    replayer = Replayer(
        workflows=[BuildPipelineWorkflow, BuildPlanWorkflow], data_converter=pydantic_data_converter
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
