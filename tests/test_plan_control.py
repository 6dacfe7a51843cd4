"""A plan has a pipeline's operator control: the `status` query, current details in the UI, the
failure hold with `retry`, `skip` and `abort`, and a cancel that closes its open task files.

Through the real path: `worker.py` as a process on the dev server, agents completing with
complete_activity.py, and the operator's `temporal` CLI for updates, cancel and metadata.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus

from harness.agents import worker_and_agent
from harness.env import build_plan_input, make_config, start_plan
from harness.pipelines import (
    dispatched,
    held_messages,
    install_matrix_recorder,
    status_of,
    temporal,
    update,
    wait_listed,
    wait_stage,
)
from harness.worker_process import WorkerProcess, worker_env
from operator_view import hold_commands
from tests.helpers.checks import failure_of, wait_for
from tests.helpers.cli import temporal_cli
from tests.helpers.histories import save_history

HOLD = 600.0


def failing_phase(number: int, times: int = 1) -> Any:
    """An agent that fails phase `number`'s first `times` dispatches and does the rest."""
    failed: list[str] = []

    def decide(task: dict[str, Any]) -> tuple[str, str]:
        if task["payload"]["phase_number"] == number and len(failed) < times:
            failed.append(task["id"])
            return ("failed", f"phase {number} tests are red")
        return ("success", f"phase {task['payload']['phase_number']} done")

    return decide


def phase_tasks(config: Any, number: int) -> list[dict[str, Any]]:
    return [t for t in dispatched(config) if t["payload"]["phase_number"] == number]


async def test_a_failed_phase_holds_then_retry_runs_it_again(
    client: Client, tmp_path: Path, address: str
) -> None:
    """FAILURE_HOLD holds a failed phase at `awaiting-retry` (status, BuildStage, current
    details, one [HELD] message); `retry` with a note dispatches it again with a new task file,
    supersedes the first, and the plan goes on to complete every phase."""
    config = make_config(tmp_path, address)
    record = install_matrix_recorder(config)
    worker = WorkerProcess(worker_env(config, FAILURE_HOLD=str(HOLD)), tmp_path / "logs")
    async with worker_and_agent(client, config, failing_phase(2), worker):
        handle = await start_plan(client, config.task_queue, build_plan_input("held-plan", 3))
        await wait_stage(handle, "awaiting-retry")
        status = await status_of(handle)
        assert status.failed_stage == "phase-2"
        assert status.failed_error == "phase 2 tests are red"
        assert status.stages_done == ["phase-1"]
        [first] = phase_tasks(config, 2)
        assert status.task_ids["phase-2"] == first["id"]
        await wait_listed(client, handle, "awaiting-retry")  # the operator's inbox of holds

        metadata = await temporal_cli(["workflow", "metadata", "--workflow-id", handle.id], address)
        assert "stage **awaiting-retry**" in metadata
        for _, command in hold_commands(handle.id, skippable=True):
            assert command in metadata
        await wait_for(lambda: len(held_messages(record)) == 1, 10, what="the hold's message")
        [message] = held_messages(record)
        assert message.startswith("[HELD] held-plan: the phase-2 stage failed")
        assert "Error: phase 2 tests are red" in message

        code, out = await update(address, handle.id, "approve")  # a pipeline's gate: not here
        assert code != 0 and "approve" in out
        code, out = await update(address, handle.id, "retry", json.dumps("use the cache"))
        assert code == 0, out
        result = await asyncio.wait_for(handle.result(), 60)
        await save_history(handle, "plan_hold_retry")
        status = await status_of(handle)
    assert (result.status, result.phases_run) == ("complete", 3)
    first_again, second = phase_tasks(config, 2)
    assert first_again["id"] == first["id"] and first_again["status"] == "superseded"
    assert second["payload"]["operator_note"] == "use the cache"
    assert "use the cache" in second["payload"]["instruction"]
    assert status.stage == "done"
    assert status.stages_done == ["phase-1", "phase-2", "phase-3"]
    # BuildStage moved off awaiting-retry: the inbox no longer lists the plan
    await wait_listed(client, handle, "done")


async def test_skip_goes_on_and_abort_fails_the_plan(
    client: Client, tmp_path: Path, address: str
) -> None:
    """The input's `failure_hold_seconds` holds without FAILURE_HOLD: `skip` carries on with the
    next phase (the result says `partial`); `abort` on a second plan fails it saying so."""
    config = make_config(tmp_path, address)
    worker = WorkerProcess(worker_env(config), tmp_path / "logs")
    async with worker_and_agent(client, config, failing_phase(1, times=2), worker):
        skipped = await start_plan(
            client, config.task_queue, _with_hold(build_plan_input("skip-plan", 2), HOLD)
        )
        await wait_stage(skipped, "awaiting-retry")
        code, out = await update(address, skipped.id, "skip", '{"note": "done by hand"}')
        assert code == 0, out
        result = await asyncio.wait_for(skipped.result(), 60)
        await save_history(skipped, "plan_hold_skip")
        status = await status_of(skipped)

        aborted = await start_plan(
            client, config.task_queue, _with_hold(build_plan_input("abort-plan", 2), HOLD)
        )
        await wait_stage(aborted, "awaiting-retry")
        code, out = await update(
            address, aborted.id, "abort", '{"note": "wrong plan", "by": "ana"}'
        )
        assert code == 0, out
        cause = await failure_of(aborted)
        code, out = await update(address, aborted.id, "retry")  # nothing is held any more
    assert (result.status, result.phases_run) == ("partial", 1)
    assert status.skipped == ["phase-1"] and status.stages_done == ["phase-2"]
    assert cause.type == "PhaseFailedError"
    assert cause.message == "Phase 1 failed: phase 1 tests are red; aborted by ana: wrong plan"
    assert code != 0


async def test_a_hold_that_expires_fails_the_plan(
    client: Client, tmp_path: Path, address: str
) -> None:
    config = make_config(tmp_path, address)
    worker = WorkerProcess(worker_env(config), tmp_path / "logs")
    async with worker_and_agent(client, config, failing_phase(1), worker):
        plan = _with_hold(build_plan_input("expiring-plan", 2), 2)
        cause = await failure_of(await start_plan(client, config.task_queue, plan))
    assert cause.message == (
        "Phase 1 failed: phase 1 tests are red; no decision came within the 2s hold"
    )
    assert len(dispatched(config)) == 1  # phase 2 never ran


async def test_cancel_closes_the_plans_open_task_files(
    client: Client, tmp_path: Path, address: str
) -> None:
    """`temporal workflow cancel` while a phase waits for its agent: the plan ends CANCELED and
    its open task file says so, instead of staying `submitted` for an agent to pick up."""
    config = make_config(tmp_path, address)
    worker = WorkerProcess(worker_env(config), tmp_path / "logs")
    async with worker_and_agent(client, config, lambda task: None, worker):
        handle = await start_plan(client, config.task_queue, build_plan_input("cancel-plan", 2))
        await wait_for(lambda: len(dispatched(config)) == 1, 30, what="phase 1's task file")
        code, out, err = await temporal(address, "workflow", "cancel", "--workflow-id", handle.id)
        assert code == 0, out + err

        async def closed() -> bool:
            return (await handle.describe()).status == WorkflowExecutionStatus.CANCELED

        await wait_for(closed, 30, what="the plan to end CANCELED")
        await save_history(handle, "plan_cancel")
        status = await status_of(handle)
    [task] = dispatched(config)
    assert task["status"] == "cancelled"
    assert task["history"][-1]["note"].startswith("BuildPlanWorkflow ended (cancelled)")
    assert (status.stage, status.outcome) == ("cancelled", "cancelled")


async def test_plan_input_refuses_a_hold_out_of_bounds(
    client: Client, tmp_path: Path, address: str
) -> None:
    config = make_config(tmp_path, address)
    async with WorkerProcess(worker_env(config), tmp_path / "logs"):
        plan = _with_hold(build_plan_input("bad-hold", 1), -1)
        cause = await failure_of(await start_plan(client, config.task_queue, plan))
    assert cause.message == "invalid input: failure_hold_seconds must be between 0 and 2592000"
    assert not dispatched(config)


def _with_hold(plan: Any, seconds: float) -> Any:
    plan.failure_hold_seconds = seconds
    return plan
