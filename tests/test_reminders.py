"""Reminders of decisions that wait (DECISION_REMINDERS, or the input's `decision_reminders`):
at the gate and in a failure hold, through `worker.py` as a process on the dev server, to the
notification script and to a real Synapse; across a kill -9 of the worker; and, for waits of
days, on the time-skipping server.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.task_files import write_text_atomic
from config import WorkerConfig
from harness.env import make_config
from harness.pipelines import (
    PipelineScript,
    install_matrix_recorder,
    matrix_messages,
    running_pipeline,
    update,
    wait_stage,
)
from harness.worker_process import WorkerProcess, worker_env
from operator_view import gate_commands, hold_commands
from tests.helpers.checks import failure_of, wait_for
from tests.helpers.cli import temporal_cli
from tests.helpers.histories import activities_run, save_history
from tests.servers.synapse import Room

BLOCK = "root login over ssh"


def reminders(record: Path) -> list[str]:
    return [m["message"] for m in matrix_messages(record) if m["message"].startswith("[REMIND")]


async def scheduled(handle: WorkflowHandle[Any, Any], activity: str) -> int:
    """How many times the run scheduled `activity`, from its history."""
    return [t for t, _ in activities_run(await handle.fetch_history())].count(activity)


async def test_gate_reminders_in_order_then_a_decision_stops_the_rest(
    client: Client, tmp_path: Path, address: str
) -> None:
    """Two reminders at 1 s and 2 s reach the notification script, in order, each naming the
    pipeline, what it waits for, how long it waited and has left, and the commands; the UI's
    details say when the next is due; approve, and the third (at 10 min) never comes."""
    config = make_config(tmp_path, address)
    record = install_matrix_recorder(config)
    script = PipelineScript(blocks=[BLOCK])
    process = WorkerProcess(worker_env(config, DECISION_REMINDERS="1s,2s,10m"), tmp_path / "l")
    async with running_pipeline(client, config, script.decide, process) as run:
        await wait_stage(run.handle, "awaiting-approval")
        await wait_for(lambda: len(reminders(record)) == 2, 30, what="two reminders")
        metadata = await temporal_cli(
            ["workflow", "metadata", "--workflow-id", run.handle.id], address
        )
        code, out = await update(address, run.handle.id, "approve")
        assert code == 0, out
        result = await asyncio.wait_for(run.handle.result(), 60)
        await save_history(run.handle, "pipeline_gate_reminders_fewer_events")
        sent = await scheduled(run.handle, "notify_reminder")
    first, second = reminders(record)
    assert first.startswith("[REMINDER] demo-build: waits for a decision on 1 block(s) since 1s")
    assert second.startswith("[REMINDER] demo-build: waits for a decision on 1 block(s) since 2s")
    assert "6d 23h left before it ends by itself" in first
    for _, command in gate_commands(run.handle.id):
        assert command in first.splitlines()
    assert "- next reminder (3 of 3): " in metadata and "- next check of the task file" in metadata
    assert result.status == "complete"
    assert sent == 2  # the decision ended the wait: the 10-minute reminder is not scheduled


async def test_hold_reminders_reach_synapse(
    client: Client, tmp_path: Path, address: str, room: Room
) -> None:
    """A failure hold reminds too, through the Matrix API of a real Synapse, with the hold's
    commands; the input's `decision_reminders` overrides the worker's (unset here)."""
    synapse = room.synapse
    config = make_config(tmp_path, address)
    token = write_text_atomic(tmp_path / "matrix-token", room.notifier.access_token + "\n")
    env = worker_env(
        config,
        MATRIX_HOMESERVER=synapse.url,
        MATRIX_ACCESS_TOKEN_FILE=str(token),
        MATRIX_ROOM=room.room_id,
    )
    script = PipelineScript(fail_task_type="build_plan", fail_first=1)
    async with running_pipeline(
        client,
        config,
        script.decide,
        WorkerProcess(env, tmp_path / "logs"),
        failure_hold_seconds=600,
        decision_reminders="1s,2s",
    ) as run:
        await wait_stage(run.handle, "awaiting-retry")

        def bodies() -> list[str]:
            return [e["content"]["body"] for e in room.notices()]

        await wait_for(lambda: len([b for b in bodies() if b.startswith("[REMINDER]")]) == 2, 30)
        code, out = await update(address, run.handle.id, "retry", json.dumps("fixed the cache"))
        assert code == 0, out
        result = await asyncio.wait_for(run.handle.result(), 60)
        await save_history(run.handle, "pipeline_hold_reminders_fewer_events")
    held = [b for b in bodies() if b.startswith("[HELD]")]
    first, second = [b for b in bodies() if b.startswith("[REMINDER]")]
    assert len(held) == 1 and bodies().index(held[0]) < bodies().index(first)
    assert "waits for retry, skip or abort of the failed implement stage since 1s" in first
    assert "since 2s" in second and "9m" in second  # of the 10-minute hold
    for _, command in hold_commands(run.handle.id, skippable=True):
        assert command in first.splitlines()
    assert result.status == "complete"


async def test_a_reminder_due_while_the_worker_is_down_comes_once(
    client: Client, tmp_path: Path, address: str
) -> None:
    """kill -9 of the worker at the gate, the reminder's time passes while nothing runs; the
    restarted worker sends it, once: its timer fired once and its notification has one key."""
    config = make_config(tmp_path, address)
    record = install_matrix_recorder(config)
    script = PipelineScript(blocks=[BLOCK])
    worker = WorkerProcess(worker_env(config, DECISION_REMINDERS="4s,10m"), tmp_path / "l")
    async with running_pipeline(client, config, script.decide, worker) as run:
        await wait_stage(run.handle, "awaiting-approval")
        await worker.kill9()
        await asyncio.sleep(6)  # past the 4 s reminder, with no worker
        assert reminders(record) == []
        await worker.start()
        await wait_for(lambda: len(reminders(record)) == 1, 30, what="the late reminder")
        await worker.kill9()  # and once more, right after it was sent
        await worker.start()
        await wait_stage(run.handle, "awaiting-approval")
        code, out = await update(address, run.handle.id, "approve")
        assert code == 0, out
        result = await asyncio.wait_for(run.handle.result(), 60)
        sent = await scheduled(run.handle, "notify_reminder")
    assert result.status == "complete"
    assert len(reminders(record)) == 1 and sent == 1


async def test_reminders_over_days_on_the_time_skipping_server(
    ts_env: WorkflowEnvironment, ts_config: WorkerConfig
) -> None:
    """`1d,3d,6d` at a gate nobody decides: three reminders at those times, then the 7 days'
    end takes the failure path."""
    record = install_matrix_recorder(ts_config)
    script = PipelineScript(blocks=[BLOCK])
    async with running_pipeline(
        ts_env.client, ts_config, script.decide, decision_reminders="1d,3d,6d"
    ) as run:
        error = await failure_of(run.handle)
        history = await run.handle.fetch_history()
    assert error.type == "ApprovalTimedOutError"
    sent = reminders(record)
    assert [m.split(" since ")[1].split(";")[0] for m in sent] == ["1d", "3d", "6d"]
    assert re.search(r"since 6d; (1d|23h \d+m) left before it ends by itself", sent[-1])
    started = history.events[0].event_time.ToDatetime()
    times = [
        e.event_time.ToDatetime() - started
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "notify_reminder"
    ]
    for at, day in zip(times, (1, 3, 6), strict=True):
        assert timedelta(days=day) <= at < timedelta(days=day, minutes=5)
