"""AGENT_HEARTBEAT_TIMEOUT: agent stages carry a heartbeat timeout, task files say how to
heartbeat, and a silent agent fails its stage within the timeout, not after its 2-4 h bound.

Through the real path: the dev server, worker.py as a process (or the production worker) and
agents that answer and heartbeat with complete_activity.py.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from activities import instructions, task_files
from config import load_config
from exceptions import ConfigError
from harness.agents import worker_and_agent
from harness.cli import run_cli
from harness.env import build_plan_input, make_config, start_plan
from harness.pipelines import (
    PipelineScript,
    dispatched,
    install_matrix_recorder,
    matrix_messages,
    originating_task,
    running_pipeline,
    start_pipeline,
    summary_of,
)
from harness.worker_process import WorkerProcess, worker_env
from tests.helpers.checks import failure_of, stderr_line, wait_for
from tests.helpers.histories import save_history
from tests.helpers.queue import PIPELINE_TASK_TYPES

TIMEOUT = 3  # seconds: the smallest the worker accepts, so agents heartbeat every second
# A heartbeating agent runs the CLI for each beat, a process that can take a second or two on a
# loaded machine: it gets a timeout with room for that (heartbeats every 3 s).
CLI_TIMEOUT = 9


def test_setting_parses() -> None:
    assert load_config({}).heartbeat_timeout_seconds == 0
    assert load_config({"AGENT_HEARTBEAT_TIMEOUT": "0"}).heartbeat_timeout_seconds == 0
    assert load_config({"AGENT_HEARTBEAT_TIMEOUT": " 300 "}).heartbeat_timeout_seconds == 300


@pytest.mark.parametrize("value", ["-5", "1.5", "ten", "2", "86401"])
def test_bad_setting_is_one_line(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"AGENT_HEARTBEAT_TIMEOUT": value})
    message = str(caught.value)
    assert message.startswith(f"AGENT_HEARTBEAT_TIMEOUT={value!r} ")
    assert "\n" not in message


async def test_worker_refuses_a_bad_setting(tmp_path: Any) -> None:
    config = make_config(tmp_path, "127.0.0.1:1")
    env = worker_env(config, AGENT_HEARTBEAT_TIMEOUT="1")
    code, _, err = await WorkerProcess(env, tmp_path / "logs").run_to_exit()
    assert code == 2
    assert stderr_line(err).endswith(
        "AGENT_HEARTBEAT_TIMEOUT='1' must be 0 (off) or between 3 and 86400 seconds"
    )


def test_interval_is_a_third_of_the_timeout() -> None:
    assert instructions.heartbeat_seconds(timedelta(seconds=3)) == 1
    assert instructions.heartbeat_seconds(timedelta(seconds=300)) == 100
    assert instructions.heartbeat_seconds(timedelta(seconds=301)) == 100
    text = instructions.with_heartbeat("Do it. Then call: X", timedelta(seconds=300))
    assert text.startswith("Do it. Then call: X\n\n")
    assert "every 100 seconds" in text and "after 300 seconds" in text
    assert text.splitlines()[-1] == task_files.completion_command("heartbeat", "'<progress>'")
    assert text.splitlines()[-1].endswith("\"$TASK_TOKEN\" heartbeat '<progress>'")


async def test_silent_agent_fails_its_stage_within_the_timeout(
    client: Client, address: str, tmp_path: Any
) -> None:
    config = make_config(tmp_path, address)
    record = install_matrix_recorder(config)
    script = PipelineScript(ignore_task_types=("build_prefab",))
    worker = WorkerProcess(
        worker_env(config, AGENT_HEARTBEAT_TIMEOUT=str(TIMEOUT)), tmp_path / "logs"
    )
    async with running_pipeline(client, config, script.decide, worker) as run:
        await wait_for(lambda: "build_prefab" in run.agent.ignored, 30, what="the prefab task")
        seen = time.monotonic()
        cause = await failure_of(run.handle)
        noticed = time.monotonic() - seen
        await save_history(run.handle, "pipeline_heartbeat_timeout_fewer_events")
    assert cause.type == "StageTimedOutError"
    reason = f"no heartbeat from the claudebox agent within {TIMEOUT} s"
    assert cause.message.startswith(f"prefab failed: {reason} (summary: ")
    summary = summary_of(cause.message.split("(summary: ")[1].rstrip(")"))
    assert summary["outcome"] == "failed"
    assert summary["failed_stage"] == "prefab" and summary["error"] == reason
    [end] = [m["message"] for m in matrix_messages(record)]
    assert end.startswith("[FAILED] demo-build") and reason in end
    [prefab] = dispatched(config)
    assert prefab["status"] == task_files.CANCELLED
    assert prefab["payload"]["heartbeat_seconds"] == 1
    assert prefab["payload"]["instruction"] == instructions.with_heartbeat(
        instructions.prefab("demo-build", "/plans/demo/plan.md"), timedelta(seconds=TIMEOUT)
    )

    events = (await run.handle.fetch_history()).events
    [scheduled] = [
        e
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "prefab_scaffolding"
    ]
    attrs = scheduled.activity_task_scheduled_event_attributes
    assert attrs.heartbeat_timeout.ToTimedelta() == timedelta(seconds=TIMEOUT)
    assert attrs.start_to_close_timeout.ToTimedelta() == timedelta(hours=2)
    [started] = [
        e
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.scheduled_event_id == scheduled.event_id
    ]
    [timed_out] = [
        e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT
    ]
    silence = timed_out.event_time.ToDatetime() - started.event_time.ToDatetime()
    print(
        f"\nsilent agent: timed out {silence.total_seconds():.2f} s after its activity "
        f"started (timeout {TIMEOUT} s); the workflow failed {noticed:.2f} s after the "
        "agent first saw its task file"
    )
    # the server's heartbeat timer fires at the timeout; a second on top covers its timer
    # queue and a loaded machine
    assert timedelta(seconds=TIMEOUT) <= silence < timedelta(seconds=TIMEOUT + 1)
    # the failure path (summary, notification, clean-up) runs on a shared, loaded machine
    assert noticed < TIMEOUT + 10


async def test_heartbeating_agent_outlives_the_timeout(
    client: Client, address: str, tmp_path: Any
) -> None:
    """An agent that heartbeats with the real `complete_activity.py --task-file F heartbeat`
    at the interval its task file names lives past several timeouts, and its last progress
    shows on the pending activity."""
    timeout = CLI_TIMEOUT
    config = make_config(tmp_path, address, heartbeat_timeout_seconds=timeout)
    task_id, _ = originating_task(config)
    script = PipelineScript()
    progress: list[str] = []

    async def decide(task: dict[str, Any]) -> tuple[str, str] | None:
        payload = task["payload"]
        assert payload["heartbeat_seconds"] == timeout // 3
        if task["task_type"] == "build_plan":
            path = agent.path_of(task)
            started = time.monotonic()
            while time.monotonic() - started < 2 * timeout:
                await asyncio.sleep(payload["heartbeat_seconds"])
                text = f"step {len(progress) + 1}"
                code, _, err = await run_cli(["--task-file", str(path), "heartbeat", text], address)
                assert code == 0, err
                progress.append(text)
        return script.decide(task)

    async with worker_and_agent(client, config, decide) as agent:
        handle = await start_pipeline(client, config, task_id)

        async def described() -> bool:
            pending = (await handle.describe()).raw_description.pending_activities
            return bool(pending) and pending[0].heartbeat_details.payloads != []

        await wait_for(described, 30, what="the implement stage's heartbeat details")
        [pending] = (await handle.describe()).raw_description.pending_activities
        assert pending.activity_type.name == "implement_build"
        assert pending.heartbeat_details.payloads[0].data.decode().startswith('"step ')
        result = await asyncio.wait_for(handle.result(), 90)
    assert result.status == "complete"
    assert len(progress) >= 4  # it lived through two whole timeouts
    assert summary_of(result.summary_path)["outcome"] == "success"


async def test_setting_off_keeps_task_files_as_they_were(
    client: Client, address: str, tmp_path: Any
) -> None:
    """Off (the default), no stage carries a heartbeat timeout and every file is the
    original's: no `heartbeat_seconds`, and instructions without the heartbeat paragraph."""
    config = make_config(tmp_path, address)
    script = PipelineScript(flags=["tidy"])
    async with running_pipeline(client, config, script.decide) as run:
        result = await run.handle.result()
    assert result.status == "complete"
    tasks = dispatched(config)
    assert [t["task_type"] for t in tasks] == PIPELINE_TASK_TYPES
    audit_request = config.audit_dir / "demo-build" / "request.md"
    expected = {
        "build_prefab": instructions.prefab("demo-build", "/plans/demo/plan.md"),
        "build_plan": instructions.implement("demo-build", "/plans/demo/plan.md"),
        "security_audit": instructions.audit("demo-build", str(audit_request)),
        "security_fix": instructions.fixes("demo-build", ["tidy"]),
        "build_closeout": instructions.close("demo-build"),
    }
    for task in tasks:
        assert "heartbeat_seconds" not in task["payload"]
        assert task["payload"]["instruction"] == expected[task["task_type"]]
    events = (await run.handle.fetch_history()).events
    timeouts = [
        e.activity_task_scheduled_event_attributes.heartbeat_timeout.ToTimedelta()
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert timeouts and set(timeouts) <= {timedelta(0), timedelta(minutes=1)}  # notify's own


async def test_silent_phase_is_dispatched_again_then_fails_the_plan(
    client: Client, address: str, tmp_path: Any
) -> None:
    """A BuildPlan phase has two attempts: a silent agent gets a second task file (the first
    is superseded), and after the second silence the plan fails saying why."""
    config = make_config(tmp_path, address, heartbeat_timeout_seconds=TIMEOUT)
    async with worker_and_agent(client, config, lambda task: None) as agent:
        handle = await start_plan(client, config.task_queue, build_plan_input("silent-plan"))
        cause = await failure_of(handle)
        await save_history(handle, "plan_heartbeat_timeout")
    assert cause.type == "StageTimedOutError"
    assert cause.message == f"Phase 1 failed: no heartbeat from the dev agent within {TIMEOUT} s"
    assert agent.ignored == ["build_phase", "build_phase"]
    first, second = dispatched(config)
    assert (first["payload"]["attempt"], second["payload"]["attempt"]) == (1, 2)
    assert first["payload"]["activity_id"] == second["payload"]["activity_id"] == "1"
    assert first["status"] == task_files.SUPERSEDED
    assert second["payload"]["heartbeat_seconds"] == 1
    assert second["payload"]["instruction"] == instructions.with_heartbeat(
        instructions.phase(1, "silent-plan"), timedelta(seconds=TIMEOUT)
    )
