"""agent_runner.py through the real path: the dev server, worker.py and the runner as processes,
and real agent commands (small scripts written here) run from AGENT_COMMANDS_FILE."""

from __future__ import annotations

import asyncio
import os
import stat
from datetime import datetime
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHandle

from activities import task_files
from config import WorkerConfig
from harness.pipelines import dispatched, originating_task, start_pipeline, summary_of
from harness.worker_process import WorkerProcess, worker_env
from tests.helpers.checks import failure_of, task_files_in, wait_for
from tests.helpers.cli import temporal_cli
from tests.helpers.queue import PIPELINE_TASK_TYPES, only_task
from tests.helpers.runner import (
    DEMO_AGENT,
    python_agent,
    restartable_agent,
    runner_env,
    runner_process,
    start_agent_plan,
    task_status,
    worker_and_runner,
    write_commands,
)

pytestmark = pytest.mark.timeout(120)


def history_actors(path: Path) -> list[tuple[str, str]]:
    return [(h["status"], h["actor"]) for h in task_files.load_task(path)["history"]]


async def test_pipeline_end_to_end_with_a_shell_agent(
    client: Client, config: WorkerConfig, tmp_path: Path
) -> None:
    """Every stage of a BuildPipelineWorkflow run by examples/demo-agent.sh under the runner."""
    work = tmp_path / "work"
    work.mkdir()
    agent = {
        "command": [str(DEMO_AGENT)],
        "cwd": str(work),
        "timeout_seconds": 30,
        "env": {"DEMO_FLAG": "pin the base image", "DEMO_AGENT_SECONDS": "0"},
    }
    task_id, _ = originating_task(config)
    agents = {"claudebox": agent, "dev": agent, "security-agent": agent}
    async with worker_and_runner(config, tmp_path, agents) as runner:
        handle = await start_pipeline(client, config, task_id)
        result = await asyncio.wait_for(handle.result(), 60)
    assert result.status == "complete"
    summary = summary_of(result.summary_path)
    assert summary["outcome"] == "success"
    assert summary["flags_applied"] == 1
    tasks = dispatched(config)
    assert [t["task_type"] for t in tasks] == PIPELINE_TASK_TYPES
    for task in tasks:
        assert task["status"] == "completed", task["history"]
        assert [h["status"] for h in task["history"]] == ["submitted", "in-progress", "completed"]
        assert task["history"][1]["actor"] == "runner-a"
        assert task["result"]["completed_by"] == "runner-a"
        log_file = Path(task["runner"]["log_file"])
        assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
        assert log_file.parent != config.agent_task_dir
        assert f"demo agent: {task['task_type']}" in log_file.read_text()
    closeout = work / "closeout-demo-build.md"
    assert tasks[-1]["result"]["output"] == str(closeout)
    assert tasks[1]["result"]["output"] == "build-complete"  # its last output line
    assert (Path(tasks[2]["payload"]["output_dir"]) / "report.md").exists()
    secrets = [t["payload"]["task_token"] for t in tasks]
    texts = runner.outputs() + [Path(t["runner"]["log_file"]).read_text() for t in tasks]
    assert not [s for s in secrets for text in texts if s in text]
    assert len(runner.events("task_claimed")) == 5


async def test_failing_agent_fails_the_stage(
    client: Client, config: WorkerConfig, tmp_path: Path
) -> None:
    agent = python_agent(
        tmp_path / "fails.py", "print('compiling'); print('3 tests failed')\nsys.exit(3)"
    )
    async with worker_and_runner(config, tmp_path, {"dev": {"command": [str(agent)]}}):
        error = await failure_of(await start_agent_plan(client, config))
    assert (error.type, error.message) == (
        "PhaseFailedError",
        "Phase 1 failed: agent dev exited with code 3; last output: compiling | 3 tests failed",
    )
    assert task_status(only_task(config.agent_task_dir)) == "failed"


async def test_hanging_agent_is_stopped_at_its_time_limit(
    client: Client, config: WorkerConfig, tmp_path: Path
) -> None:
    """The whole process group goes: the agent and the child it left running."""
    pids = tmp_path / "pids"
    agent = python_agent(
        tmp_path / "hangs.py",
        (
            "import subprocess\n"
            "child = subprocess.Popen(['sleep', '300'])\n"
            f"pathlib.Path({str(pids)!r}).write_text(f'{{os.getpid()}} {{child.pid}}')\n"
            "print('thinking', flush=True)\n"
            "time.sleep(300)"
        ),
    )
    agents = {"dev": {"command": [str(agent)], "timeout_seconds": 1.5}}
    async with worker_and_runner(config, tmp_path, agents):
        error = await failure_of(await start_agent_plan(client, config))
    assert (error.type, error.message) == (
        "PhaseFailedError",
        "Phase 1 failed: agent dev ran past its time limit of 1.5 s and was stopped",
    )
    assert task_status(only_task(config.agent_task_dir)) == "failed"
    agent_pid, child_pid = map(int, pids.read_text().split())
    await wait_for(
        lambda: not alive(agent_pid) and not alive(child_pid),
        10,
        what="the agent and its child to be gone",
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat_line = Path(f"/proc/{pid}/stat").read_text()
    return stat_line.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is gone but not reaped


async def heartbeat_details(handle: WorkflowHandle) -> str:
    description = await handle.describe()
    pending = description.raw_description.pending_activities
    if not pending or not pending[0].heartbeat_details.payloads:
        return ""
    return pending[0].heartbeat_details.payloads[0].data.decode()


async def test_cancelled_pipeline_stops_its_agent(
    client: Client, config: WorkerConfig, address: str, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    agent = python_agent(
        tmp_path / "loops.py",
        (
            f"pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))\n"
            "for n in range(1000):\n"
            "    print(f'step {n}', flush=True)\n"
            "    time.sleep(0.2)"
        ),
    )
    async with worker_and_runner(config, tmp_path, {"dev": {"command": [str(agent)]}}) as runner:
        handle = await start_agent_plan(client, config)

        async def progress() -> bool:
            return '"step ' in await heartbeat_details(handle)

        await wait_for(progress, 20, what="the agent's output as heartbeat progress")
        await temporal_cli(["workflow", "cancel", "--workflow-id", handle.id], address)
        path = only_task(config.agent_task_dir)
        await wait_for(lambda: task_status(path) == "cancelled", 20, what="task cancelled")
        await wait_for(lambda: not alive(int(pid_file.read_text())), 10, what="agent gone")
        assert runner.events("agent_stopping")
    history = task_files.load_task(path)["history"]
    assert history[-1]["note"].startswith("agent stopped: ")


@pytest.mark.parametrize("rerun", [False, True])
async def test_kill_9_of_the_runner_then_restart(
    client: Client, config: WorkerConfig, tmp_path: Path, rerun: bool
) -> None:
    """The agent dies with the runner, and the restarted runner kills the child it left in its
    group; then it fails the stage, or re-runs it."""
    pid_file = tmp_path / "pid"
    body = (
        "import subprocess\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(300)"
    )
    agents = restartable_agent(tmp_path, body, rerun)
    async with worker_and_runner(config, tmp_path, agents) as runner:
        handle = await start_agent_plan(client, config)
        await wait_for(pid_file.exists, 20, what="the agent to start")
        await runner.kill9()
        agent_pid, child_pid = map(int, pid_file.read_text().split())
        await wait_for(lambda: not alive(agent_pid), 10, what="the agent to die with the runner")
        assert alive(child_pid)  # orphaned, still in the agent's group
        path = only_task(config.agent_task_dir)
        assert task_status(path) == "in-progress"
        await runner.start()
        await wait_for(lambda: not alive(child_pid), 10, what="the restart to kill the leftover")
        assert runner.events("agent_leftovers_killed")[0]["processes"] == 1
        if rerun:
            result = await asyncio.wait_for(handle.result(), 30)
            assert result.status == "complete"
        else:
            error = await failure_of(handle)
            assert (error.type, error.message) == (
                "PhaseFailedError",
                "Phase 1 failed: agent runner runner-a restarted while agent dev "
                "ran this task; its process is gone (set rerun_on_restart: true "
                "to run it again)",
            )
    task = task_files.load_task(path)
    assert task["status"] == ("completed" if rerun else "failed")
    notes = [h["note"] for h in task["history"]]
    assert ("re-run after an agent runner restart" in notes) is rerun


async def test_two_runners_on_one_directory_never_run_a_task_twice(
    client: Client, config: WorkerConfig, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    agent = python_agent(
        tmp_path / "agent.py",
        (
            f"with open({str(runs)!r}, 'a') as fh:\n"
            "    fh.write(os.environ['TASK_ID'] + ' ' + os.environ['RUNNER'] + '\\n')\n"
            "time.sleep(0.3)"
        ),
    )

    def commands(name: str) -> Path:
        return write_commands(
            tmp_path / f"{name}.yml",
            {"dev": {"command": [str(agent)], "concurrency": 2, "env": {"RUNNER": name}}},
        )

    env_a = runner_env(config, commands("a"), AGENT_RUNNER_ID="runner-a")
    env_b = runner_env(config, commands("b"), AGENT_RUNNER_ID="runner-b")
    async with (
        WorkerProcess(worker_env(config), tmp_path / "logs"),
        runner_process(env_a, tmp_path / "logs", "runner-a"),
        runner_process(env_b, tmp_path / "logs", "runner-b"),
    ):
        handles = [await start_agent_plan(client, config) for _ in range(8)]
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 60)
    assert all(r.status == "complete" for r in results)
    lines = [line.split() for line in runs.read_text().splitlines()]
    ids = [task_id for task_id, _ in lines]
    assert len(ids) == 8 and len(set(ids)) == 8, lines
    assert {name for _, name in lines} == {"a", "b"}  # both really competed for the tasks
    for path in task_files_in(config.agent_task_dir):
        assert [s for s, _ in history_actors(path)] == ["submitted", "in-progress", "completed"]


async def test_concurrency_limits_per_agent_and_global(
    client: Client, config: WorkerConfig, tmp_path: Path
) -> None:
    """Two agents limited to 2 each, 3 in all: six tasks waiting when the runner starts."""
    agent = python_agent(tmp_path / "agent.py", "time.sleep(0.8)")
    commands = write_commands(
        tmp_path / "agents.yml",
        {name: {"command": [str(agent)], "concurrency": 2} for name in ("dev", "ops")},
    )
    env = runner_env(config, commands, AGENT_RUNNER_CONCURRENCY="3")
    async with WorkerProcess(worker_env(config), tmp_path / "logs"):
        # the two ops tasks are the oldest, so the first pass takes both (and one dev task)
        handles = [await start_agent_plan(client, config, "ops") for _ in range(2)]
        await wait_for(
            lambda: len(task_files_in(config.agent_task_dir)) == 2, 20, what="the ops task files"
        )
        handles += [await start_agent_plan(client, config) for _ in range(4)]
        await wait_for(
            lambda: len(task_files_in(config.agent_task_dir)) == 6, 20, what="six task files"
        )
        async with runner_process(env, tmp_path / "logs") as runner:
            await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 60)
    # each task's slot, as the runner held it: from its agent's start to the stage being told
    started = {e["task_id"]: e for e in runner.events("agent_started")}
    finished = {e["task_id"]: e for e in runner.events("task_finished")}
    assert len(started) == len(finished) == 6
    spans = [
        (
            started[t]["agent"],
            datetime.fromisoformat(started[t]["timestamp"]),
            datetime.fromisoformat(finished[t]["timestamp"]),
        )
        for t in started
    ]

    def most_at_once(agents: set[str]) -> int:
        chosen = [(s, e) for a, s, e in spans if a in agents]
        return max(sum(1 for s2, e2 in chosen if s2 <= s < e2) for s, _ in chosen)

    assert most_at_once({"dev"}) == 2
    assert most_at_once({"ops"}) == 2
    assert most_at_once({"dev", "ops"}) == 3
    created = {t["id"]: t["created"] for t in dispatched(config)}
    claimed = [created[e["task_id"]] for e in runner.events("task_claimed") if e["agent"] == "dev"]
    assert len(claimed) == 4
    assert claimed == sorted(claimed)  # waiting tasks are taken oldest first


async def test_runner_heartbeats_keep_a_silent_agent_alive_under_agent_heartbeat_timeout(
    client: Client, config: WorkerConfig, tmp_path: Path
) -> None:
    """AGENT_HEARTBEAT_TIMEOUT=3 on the worker; the agent itself never heartbeats and runs 5 s.
    The runner beats at the task's `heartbeat_seconds` (1), not its own 60 s default."""
    agent = python_agent(tmp_path / "agent.py", "time.sleep(5); print('done quietly')")
    async with worker_and_runner(
        config,
        tmp_path,
        {"dev": {"command": [str(agent)]}},
        worker_extra={"AGENT_HEARTBEAT_TIMEOUT": "3"},
        AGENT_RUNNER_HEARTBEAT_SECONDS="60",
    ):
        result = await asyncio.wait_for((await start_agent_plan(client, config)).result(), 30)
    assert result.status == "complete"
    task = task_files.load_task(only_task(config.agent_task_dir))
    assert task["payload"]["heartbeat_seconds"] == 1
    assert (task["status"], task["result"]["output"]) == ("completed", "done quietly")
