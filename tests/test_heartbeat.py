"""`complete_activity.py ... heartbeat [progress]` as agents run it, against the real dev server.

Tokens come from the real `execute_build_phase` activity (PhaseProbeWorkflow) or from a real
BuildPipelineWorkflow on the production worker; the operator's side is the real `temporal` CLI.
"""

from __future__ import annotations

import base64
import json

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError

from activities import task_files
from agent_calls import MAX_PROGRESS_LEN, clean_progress, decode_token, token_ref
from config import WorkerConfig
from harness.cli import run_cli
from harness.pipelines import PipelineScript, dispatched, running_pipeline
from models import BuildPhaseResult
from tests.helpers.checks import wait_for
from tests.helpers.cli import (
    FAKE_TOKEN,
    Dispatched,
    cli_refused,
    dispatch,
    files_of,
    heartbeat_details,
    probe_worker,
    temporal_cli,
)
from tests.helpers.queue import only_task

STOP = "stop: the stage or its pipeline was cancelled"


def recorded(out: str) -> str:
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record["event"] == "heartbeat_recorded"
    return str(record["progress"])


async def test_heartbeat_progress_shows_in_describe(
    client: Client, config: WorkerConfig, address: str
) -> None:
    async with probe_worker(client, config):
        (task,) = await dispatch(client, config)
        code, out, err = await run_cli([task.token, "heartbeat", "compiling 3/7"], address)
        assert code == 0, err
        assert err == "" and task.token not in out
        assert recorded(out) == "compiling 3/7"
        assert await heartbeat_details(task.handle.id, address) == ["compiling 3/7"]

        # the last heartbeat wins; one without progress is recorded too
        code, out, err = await run_cli([task.token, "heartbeat", "linking"], address)
        assert code == 0, err
        assert await heartbeat_details(task.handle.id, address) == ["linking"]
        code, out, err = await run_cli([task.token, "heartbeat"], address)
        assert code == 0, err
        assert recorded(out) == ""

        assert (await run_cli([task.token, "success", "done"], address))[0] == 0
        assert await task.handle.result() == BuildPhaseResult("success", "done")
        line = await cli_refused([task.token, "heartbeat", "still here"], address, 4, task.token)
    assert "already completed, timed out, or unknown" in line


async def test_progress_arrives_as_one_capped_line(
    client: Client, config: WorkerConfig, address: str
) -> None:
    """Newlines and control characters cannot forge a second line in what operators read."""
    noisy = "step 1\n\x1b[31mred\x1b[0m\r\nstep 2\x07\u202e <b>" + "x" * 600
    async with probe_worker(client, config):
        (task,) = await dispatch(client, config)
        code, out, err = await run_cli(["-", "heartbeat", noisy], address, stdin=task.token)
        assert code == 0, err
        assert task.token not in out + err
        [details] = await heartbeat_details(task.handle.id, address)
        await task.handle.terminate("test over")
    assert details == recorded(out) == clean_progress(noisy)
    assert len(details) == MAX_PROGRESS_LEN and details.endswith("\u2026")
    assert details.startswith("step 1 [31mred [0m step 2 \u2039b\u203a")
    assert not any(ch in details for ch in "\n\r\x1b\x07\u202e<>")


async def test_a_token_in_the_progress_is_never_recorded(
    client: Client, config: WorkerConfig, address: str
) -> None:
    async with probe_worker(client, config):
        (task,) = await dispatch(client, config)
        code, out, err = await run_cli(
            ["--task-file", str(task.path), "heartbeat", f"my token is {task.token}!"], address
        )
        assert code == 0, err
        details = await heartbeat_details(task.handle.id, address)
        await task.handle.terminate("test over")
    assert details == ["my token is [task token]!"] == [recorded(out)]
    assert task.token not in out + err


async def test_heartbeat_from_task_file_and_stdin(
    client: Client, config: WorkerConfig, address: str
) -> None:
    async with probe_worker(client, config):
        by_file, by_stdin = await dispatch(client, config, count=2)
        code, out, err = await run_cli(
            ["--task-file", str(by_file.path), "heartbeat", "from file"], address
        )
        assert code == 0, err
        assert by_file.token not in out + err
        code, out, err = await run_cli(
            ["-", "heartbeat", "from stdin"], address, stdin=by_stdin.token + "\n"
        )
        assert code == 0, err
        assert by_stdin.token not in out + err
        assert await heartbeat_details(by_file.handle.id, address) == ["from file"]
        assert await heartbeat_details(by_stdin.handle.id, address) == ["from stdin"]
        for task in (by_file, by_stdin):
            await task.handle.terminate("test over")


@pytest.mark.parametrize(
    "args, stdin, expected",
    [
        (["abc$def==", "heartbeat", "x"], None, "not standard base64"),
        (["-", "heartbeat"], "YWI\n", "not standard base64"),
        ([FAKE_TOKEN, "heartbeat", "x"], None, "the server cannot decode it"),
        ([FAKE_TOKEN, "Heartbeat"], None, "unknown status"),
    ],
)
async def test_garbled_token_exits_1(
    args: list[str], stdin: str | None, expected: str, address: str
) -> None:
    line = await cli_refused(args, address, 1, FAKE_TOKEN, "abc$def", stdin=stdin)
    assert expected in line, line


async def cancel_requested(task: Dispatched) -> bool:
    async for event in task.handle.fetch_history_events():
        if event.HasField("activity_task_cancel_requested_event_attributes"):
            return True
    return False


async def test_cancel_while_the_activity_is_open_exits_6(
    client: Client, config: WorkerConfig, address: str
) -> None:
    """The workflow waits for the cancel to reach the agent: the heartbeat is how it does."""
    async with probe_worker(client, config):
        (task,) = await dispatch(client, config, wait_for_cancel=True)
        await temporal_cli(["workflow", "cancel", "--workflow-id", task.handle.id], address)
        await wait_for(lambda: cancel_requested(task), what="the activity's cancel request")
        line = await cli_refused([task.token, "heartbeat", "working"], address, 6, task.token)
        assert STOP in line
        await task.handle.terminate("test over")


async def test_paused_activity_exits_6(client: Client, config: WorkerConfig, address: str) -> None:
    """`temporal activity pause` asks the running attempt to stop; the line says it was a pause."""
    async with probe_worker(client, config):
        (task,) = await dispatch(client, config)
        await temporal_cli(
            ["activity", "pause", "--workflow-id", task.handle.id, "--activity-id", "1"], address
        )
        line = await cli_refused([task.token, "heartbeat", "working"], address, 6, task.token)
        assert "stop: an operator paused this activity" in line
        await task.handle.terminate("test over")


async def test_cancel_of_a_closed_workflow_exits_6(
    client: Client, config: WorkerConfig, address: str
) -> None:
    """Once the workflow is closed the server only says NOT_FOUND; the CLI finds out why."""
    async with probe_worker(client, config):
        (task,) = await dispatch(client, config)
        await temporal_cli(["workflow", "cancel", "--workflow-id", task.handle.id], address)
        with pytest.raises(WorkflowFailureError):
            await task.handle.result()
        assert STOP in await cli_refused(
            [task.token, "heartbeat", "working"], address, 6, task.token
        )
        # success and failed keep the original's contract: a dead token is exit 4
        await cli_refused([task.token, "success", "late"], address, 4, task.token)


async def test_terminated_workflow_exits_4(
    client: Client, config: WorkerConfig, address: str
) -> None:
    """Not every closed workflow means "stop": a terminate is the plain dead-token case."""
    async with probe_worker(client, config):
        (task,) = await dispatch(client, config)
        await task.handle.terminate("operator")
        await cli_refused([task.token, "heartbeat"], address, 4, task.token)


async def test_pipeline_cancel_marks_the_file_and_its_heartbeat_exits_6(
    client: Client, config: WorkerConfig, address: str
) -> None:
    script = PipelineScript(ignore_task_types=("build_prefab",))
    async with running_pipeline(client, config, script.decide) as run:
        await wait_for(lambda: len(dispatched(config)) == 1)
        await temporal_cli(["workflow", "cancel", "--workflow-id", run.handle.id], address)
        with pytest.raises(WorkflowFailureError):
            await run.handle.result()
    assert [t["status"] for t in dispatched(config)] == [task_files.CANCELLED]
    path = only_task(config.agent_task_dir)
    token = task_files.load_task(path)["payload"]["task_token"]
    assert STOP in await cli_refused(
        ["--task-file", str(path), "heartbeat", "x"], address, 6, token
    )
    # the bare token too: the cancelled pipeline ends CANCELED, which the CLI asks about
    assert (await run.handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert STOP in await cli_refused([token, "heartbeat", "x"], address, 6, token)


@pytest.mark.parametrize("status", [task_files.SUPERSEDED, task_files.CANCELLED])
async def test_task_file_marked_stopped_exits_6(
    status: str, client: Client, config: WorkerConfig, address: str
) -> None:
    async with probe_worker(client, config):
        (task,) = await dispatch(client, config)
        assert (await run_cli([task.token, "success"], address))[0] == 0
        # still `submitted`: the stage simply ended
        await cli_refused(["--task-file", str(task.path), "heartbeat"], address, 4, task.token)
        task_files.update_task_status(task.path, status, "replaced by the test")
        assert STOP in await cli_refused(
            ["--task-file", str(task.path), "heartbeat"], address, 6, task.token
        )


async def test_token_of_a_retried_attempt_exits_6(
    client: Client, config: WorkerConfig, address: str
) -> None:
    """Attempt 1 timed out and a newer attempt is pending: the old token's agent must stop, even
    without the task file to tell it so."""
    async with probe_worker(client, config):
        # attempts enough that a newer one stays pending however slow the CLI is under load
        (first,) = await dispatch(client, config, start_to_close_seconds=2, max_attempts=50)
        # about 4 s alone; the bound is wide because the machine's CPUs are shared under load
        await wait_for(lambda: len(files_of(config, first.handle.id)) >= 2, timeout=60)
        assert STOP in await cli_refused(
            [first.token, "heartbeat", "late"], address, 6, first.token
        )
        await first.handle.terminate("test over")


async def test_token_names_its_workflow_run(client: Client, config: WorkerConfig) -> None:
    async with probe_worker(client, config):
        (task,) = await dispatch(client, config)
        ref = token_ref(decode_token(task.token))
        description = await task.handle.describe()
        await task.handle.terminate("test over")
    assert ref is not None
    assert (ref.workflow_id, ref.run_id) == (task.handle.id, description.run_id)
    assert (ref.activity_id, ref.attempt) == ("1", 1)
    assert token_ref(b"\xff\xfe not a token") is None
    assert token_ref(base64.b64decode(FAKE_TOKEN)) is None
