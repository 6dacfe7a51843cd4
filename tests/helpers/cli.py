"""Shared by the tests that run complete_activity.py, the `temporal` CLI and shell commands:
probe workflows that dispatch one real `execute_build_phase` task each, the check every error
path of complete_activity.py must pass, and commands run as an operator or agent types them."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

import worker as worker_module
from activities import task_files
from config import WorkerConfig
from harness.agents import new_tasks
from harness.cli import run_cli
from harness.env import BIN, cli_env, run_process
from harness.pipelines import temporal
from models import BuildPhaseInput, BuildPhaseResult
from tests.helpers.checks import stderr_line, wait_for
from tests.helpers.phase_probe import PhaseProbeWorkflow, ProbeInput

# A well-formed token that no server issued: for paths that must fail before the network.
FAKE_TOKEN = base64.b64encode(b"fake-task-token-" + uuid.uuid4().bytes).decode()


@contextlib.asynccontextmanager
async def probe_worker(client: Client, config: WorkerConfig) -> AsyncIterator[Worker]:
    """PhaseProbeWorkflow plus the production activities, on this test's queue."""
    async with Worker(
        client,
        task_queue=config.task_queue,
        workflows=[PhaseProbeWorkflow],
        activities=worker_module.activities(config),
    ) as worker:
        yield worker


class Dispatched:
    """One dispatched phase: the workflow, its task file and the token inside."""

    def __init__(self, handle: WorkflowHandle[Any, BuildPhaseResult], path: Path) -> None:
        self.handle = handle
        self.path = path
        self.token: str = task_files.load_task(path)["payload"]["task_token"]


def files_of(config: WorkerConfig, workflow_id: str) -> list[Path]:
    return [p for p, _ in task_files.dispatched_tasks(config.agent_task_dir, workflow_id)]


async def dispatch(
    client: Client, config: WorkerConfig, count: int = 1, **limits: Any
) -> list[Dispatched]:
    """Start `count` probe workflows and wait until each has written its task file."""
    handles = [
        await client.start_workflow(
            PhaseProbeWorkflow.run,
            ProbeInput(
                BuildPhaseInput(
                    plan_name="cli", phase_number=i + 1, agent_type="dev", description=f"probe {i}"
                ),
                **limits,
            ),
            id=f"cli-{uuid.uuid4()}",
            task_queue=config.task_queue,
        )
        for i in range(count)
    ]
    seen: set[str] = set()
    found: dict[str, Path] = {}

    def all_written() -> bool:
        for path, task in new_tasks(config.agent_task_dir, seen):
            found[task["payload"]["workflow_id"]] = path
        return len(found) == len(handles)

    await wait_for(all_written, timeout=60, interval=0.1)
    return [Dispatched(h, found[h.id]) for h in handles]


def assert_clean_error(code: int, out: str, err: str, expected: int, *secrets: str) -> str:
    assert code == expected, (code, out, err)
    line = stderr_line(err)
    assert line.startswith("complete_activity: "), line
    for secret in secrets:
        assert secret not in out and secret not in err
    return line


async def cli_refused(
    args: list[str], address: str, expected: int, *secrets: str, stdin: str | None = None
) -> str:
    """Run complete_activity.py with `args` and check it fails cleanly with exit `expected`,
    none of `secrets` in its output; returns its one stderr line."""
    code, out, err = await run_cli(args, address, stdin=stdin)
    return assert_clean_error(code, out, err, expected, *secrets)


async def temporal_cli(args: list[str], address: str) -> str:
    """Run the real `temporal` CLI as an operator would; its stdout, or a failure naming why."""
    code, out, err = await temporal(address, *args, "--namespace", "default")
    assert code == 0, (args, out, err)
    return out


def operator_env(address: str, **extra: str) -> dict[str, str]:
    """An operator's shell: the server's address, and the venv's `temporal` first on PATH."""
    return cli_env(address, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra)


async def shell(script: str, env: dict[str, str], cwd: Path | None = None) -> tuple[str, str]:
    """Run `script` with bash in strict mode (-euo pipefail), as a person pastes it into a
    shell; fails unless it exits 0. Returns (stdout, stderr)."""
    code, out, err = await run_process(["bash", "-euo", "pipefail", "-c", script], env, cwd)
    assert code == 0, (script, out, err)
    return out, err


async def heartbeat_details(workflow_id: str, address: str) -> list[Any]:
    """The pending activity's heartbeat details, as `temporal workflow describe` shows them."""
    described = json.loads(
        await temporal_cli(
            ["workflow", "describe", "--workflow-id", workflow_id, "--output", "json"], address
        )
    )
    [pending] = described["pendingActivities"]
    details = pending.get("heartbeatDetails", [])
    assert isinstance(details, list), details  # the CLI shows decoded JSON payloads
    return details
