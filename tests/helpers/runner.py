"""agent_runner.py as a process beside the worker, its commands file, the plans it runs, and
small agent scripts for the tests."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client, WorkflowHandle

from activities import task_files
from config import WorkerConfig
from harness.env import ROOT, build_plan_input, start_plan
from harness.worker_process import RUNNER, WorkerProcess, worker_env
from models import BuildPlanResult

DEMO_AGENT = ROOT / "examples" / "demo-agent.sh"


def write_commands(path: Path, agents: dict[str, dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump(agents))
    return path


def runner_env(config: WorkerConfig, commands: Path, **extra: str) -> dict[str, str]:
    """What PM2 would give agent_runner.py beside the worker: the same queue and server, the
    commands file, and a fast heartbeat so a cancel is seen within the tests' patience."""
    env = worker_env(config)
    env.update(
        AGENT_COMMANDS_FILE=str(commands),
        AGENT_RUNNER_HEARTBEAT_SECONDS="0.5",
        AGENT_RUNNER_KILL_GRACE_SECONDS="2",
        AGENT_RUNNER_ID="runner-a",
    )
    env.update(extra)
    return env


def runner_process(env: dict[str, str], log_dir: Path, name: str = "runner") -> WorkerProcess:
    return WorkerProcess(env, log_dir, name=name, script=RUNNER, ready_event="runner_started")


@contextlib.asynccontextmanager
async def worker_and_runner(
    config: WorkerConfig,
    tmp_path: Path,
    agents: dict[str, dict[str, Any]],
    worker_extra: dict[str, str] | None = None,
    **runner_extra: str,
) -> AsyncIterator[WorkerProcess]:
    """worker.py and agent_runner.py as processes on `config`'s queue, as PM2 runs them on a
    host, the runner running `agents` (its commands file written to tmp_path/agents.yml) with
    `runner_extra` in its environment; yields the runner."""
    commands = write_commands(tmp_path / "agents.yml", agents)
    logs = tmp_path / "logs"
    async with (
        WorkerProcess(worker_env(config, **(worker_extra or {})), logs),
        runner_process(runner_env(config, commands, **runner_extra), logs) as runner,
    ):
        yield runner


async def start_agent_plan(
    client: Client, config: WorkerConfig, agent: str = "dev"
) -> WorkflowHandle[Any, BuildPlanResult]:
    """A one-phase BuildPlan for `agent`, on `config`'s queue: one task for one agent command."""
    return await start_plan(
        client, config.task_queue, build_plan_input("runner-plan", agent_type=agent)
    )


def python_agent(path: Path, body: str) -> Path:
    """An executable Python script (the test's interpreter) with `body` as its code."""
    path.write_text(f"#!{sys.executable}\nimport os, sys, time, pathlib\n{body}\n")
    path.chmod(0o755)
    return path


def restartable_agent(tmp_path: Path, body: str, rerun: bool) -> dict[str, dict[str, Any]]:
    """The commands of a dev agent whose first run runs `body` and whose second run (a re-run
    after the runner restarted) prints `second run done` and exits 0 at once; `rerun` is its
    rerun_on_restart."""
    marker = tmp_path / "ran-once"
    agent = python_agent(
        tmp_path / "agent.py",
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if marker.exists():\n"
        "    print('second run done'); sys.exit(0)\n"
        "marker.write_text('x')\n" + body,
    )
    return {"dev": {"command": [str(agent)], "rerun_on_restart": rerun}}


def task_status(path: Path) -> str:
    return str(task_files.load_task(path).get("status"))


def statuses(queue_dir: Path) -> dict[str, str]:
    """Status by task_type of the worker's files in the queue."""
    found = {}
    for path in task_files.iter_task_files(queue_dir, archive=False):
        task = task_files.load_task(path)
        if task.get("source_agent") == task_files.SOURCE_AGENT:
            found[str(task["task_type"])] = str(task["status"])
    return found
