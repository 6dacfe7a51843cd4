"""Shared by the tests that run complete_activity.py: probe workflows that dispatch one real
`execute_build_phase` task each, and the check every error path of the CLI must pass."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
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
from harness.env import TEMPORAL_BIN
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


async def temporal_cli(args: list[str], address: str) -> str:
    """Run the real `temporal` CLI as an operator would; its stdout, or a failure naming why."""
    proc = await asyncio.create_subprocess_exec(
        TEMPORAL_BIN,
        *args,
        "--address",
        address,
        "--namespace",
        "default",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (args, err.decode())
    return out.decode()


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
