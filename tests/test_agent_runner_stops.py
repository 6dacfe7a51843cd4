"""agent_runner.py on bad input and on a graceful stop, as processes against the dev server."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
import yaml
from temporalio.client import Client

from activities import task_files
from config import WorkerConfig
from tests.helpers.checks import failure_of, stderr_line, wait_for
from tests.helpers.queue import only_task
from tests.helpers.runner import (
    restartable_agent,
    runner_env,
    runner_process,
    start_agent_plan,
    task_status,
    worker_and_runner,
    write_commands,
)

pytestmark = pytest.mark.timeout(120)


async def test_bad_input_gets_one_log_line_each_and_the_runner_goes_on(
    client: Client, config: WorkerConfig, tmp_path: Path
) -> None:
    queue = task_files.ensure_private_dir(config.agent_task_dir)
    malformed = queue / "20261124-000000-badyaml0.yml"
    malformed.write_text("status: [submitted\n")
    tokenless = queue / "20261124-000001-notoken0.yml"
    tokenless.write_text(
        yaml.safe_dump(
            {
                "id": "notoken0",
                "created": "2026-11-24T00:00:01+00:00",
                "source_agent": "dispatcher",
                "target_agent": "dev",
                "task_type": "chore",
                "status": "submitted",
                "payload": {"instruction": "tidy up"},
                "history": [],
            }
        )
    )
    other = queue / "20261124-000002-other000.yml"
    other.write_text(
        yaml.safe_dump(
            {"target_agent": "helm-build", "status": "submitted", "payload": {"task_token": "eA=="}}
        )
    )
    other_before = other.read_text()
    agents = {"dev": {"command": ["/nonexistent/agent", "$TASK_ID"]}}
    async with worker_and_runner(config, tmp_path, agents) as runner:
        error = await failure_of(await start_agent_plan(client, config))
        await wait_for(lambda: task_status(tokenless) == "failed", 10, what="tokenless failed")
        assert runner.alive()
    assert (error.type, error.message) == (
        "PhaseFailedError",
        "Phase 1 failed: cannot start '/nonexistent/agent' for agent dev: "
        "No such file or directory",
    )
    assert task_status(only_task(config.agent_task_dir)) == "failed"
    assert malformed.read_text() == "status: [submitted\n"  # left untouched
    assert other.read_text() == other_before  # another dispatcher's agent: left untouched
    [bad] = runner.events("task_file_malformed")
    assert bad["task_file"] == str(malformed) and "is not valid YAML" in bad["error"]
    [no_token] = runner.events("task_without_token")
    assert no_token["task_file"] == str(tokenless)
    assert len(runner.events("agent_start_failed")) == 1
    assert "Traceback" not in runner.stderr


async def test_unreadable_commands_file_exits_2_with_one_line(
    config: WorkerConfig, tmp_path: Path
) -> None:
    env = runner_env(config, tmp_path / "missing.yml")
    code, _, err = await runner_process(env, tmp_path / "logs").run_to_exit()
    assert code == 2
    assert stderr_line(err) == (
        f"agent_runner: AGENT_COMMANDS_FILE {tmp_path}/missing.yml "
        "cannot be read: No such file or directory"
    )


async def test_a_second_runner_with_the_same_id_refuses_to_start(
    config: WorkerConfig, tmp_path: Path
) -> None:
    commands = write_commands(tmp_path / "agents.yml", {"dev": {"command": ["true"]}})
    env = runner_env(config, commands)
    async with runner_process(env, tmp_path / "logs", "first"):
        code, _, err = await runner_process(env, tmp_path / "logs", "second").run_to_exit()
    assert code == 2
    assert stderr_line(err) == (
        f"agent_runner: another agent runner with id 'runner-a' is running on "
        f"{config.agent_task_dir}: give each runner its own AGENT_RUNNER_ID"
    )


@pytest.mark.parametrize("rerun", [False, True])
async def test_graceful_stop_stops_the_agent(
    client: Client, config: WorkerConfig, tmp_path: Path, rerun: bool
) -> None:
    """SIGINT (what PM2 sends): the agent gets SIGTERM; its stage fails at once, or, with
    rerun_on_restart, the task waits in-progress for the next start, which runs it again."""
    started = tmp_path / "started"
    body = (
        "import signal\n"
        "signal.signal(signal.SIGTERM, lambda *_: (print('got SIGTERM', flush=True), "
        "sys.exit(143)))\n"
        f"pathlib.Path({str(started)!r}).write_text('x')\n"
        "time.sleep(300)"
    )
    agents = restartable_agent(tmp_path, body, rerun)
    async with worker_and_runner(config, tmp_path, agents) as runner:
        handle = await start_agent_plan(client, config)
        await wait_for(started.exists, 20, what="the agent to start")
        runner.stop_signal = signal.SIGINT
        assert await runner.stop() == 0
        path = only_task(config.agent_task_dir)
        log_file = Path(task_files.load_task(path)["runner"]["log_file"])
        assert "got SIGTERM" in log_file.read_text()
        if not rerun:
            error = await failure_of(handle)
            assert (error.type, error.message) == (
                "PhaseFailedError",
                "Phase 1 failed: agent runner runner-a stopped while agent dev ran; the agent "
                "was stopped",
            )
            assert task_status(path) == "failed"
            return
        assert task_status(path) == "in-progress"
        await runner.start()
        result = await asyncio.wait_for(handle.result(), 30)
    assert result.status == "complete"
    assert task_status(path) == "completed"
