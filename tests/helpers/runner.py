"""agent_runner.py as a process, its commands file, and small agent scripts for the tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from activities import task_files
from config import WorkerConfig
from harness.env import ROOT
from harness.worker_process import WorkerProcess, worker_env

RUNNER = ROOT / "agent_runner.py"
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


def python_agent(path: Path, body: str) -> Path:
    """An executable Python script (the test's interpreter) with `body` as its code."""
    path.write_text(f"#!{sys.executable}\nimport os, sys, time, pathlib\n{body}\n")
    path.chmod(0o755)
    return path


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
