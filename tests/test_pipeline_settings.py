"""The settings a pipeline runs by are fixed in its history when it starts: a replay on a worker
whose process state differs (here: no `BuildStage` search attribute) still replays."""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from config import WorkerConfig
from harness.pipelines import PipelineScript, running_pipeline
from models import Features
from tests.helpers.histories import build_stages
from workflows.build_pipeline_workflow import BuildPipelineWorkflow


async def test_replay_ignores_the_replaying_workers_features(
    client: Client, config: WorkerConfig
) -> None:
    script = PipelineScript(fail_task_type="build_prefab")
    assert Features.stage_search_attribute
    async with running_pipeline(client, config, script.decide) as run:
        try:
            await run.handle.result()
        except WorkflowFailureError:
            pass
    history = await run.handle.fetch_history()
    kinds = [event.event_type for event in history.events]
    assert EventType.EVENT_TYPE_MARKER_RECORDED in kinds  # the settings, as a local activity
    assert build_stages(history) == ["failed"]  # a run that never waited: its end alone

    replayer = Replayer(workflows=[BuildPipelineWorkflow], data_converter=pydantic_data_converter)
    Features.stage_search_attribute = False
    try:
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    finally:
        Features.stage_search_attribute = True
    assert result.replay_failure is None, result.replay_failure
