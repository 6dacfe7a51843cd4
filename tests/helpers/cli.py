"""Probe workflows that dispatch one task file each, for the CLI's tests."""

from __future__ import annotations

import contextlib
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
from models import BuildPhaseInput, BuildPhaseResult
from tests.helpers.checks import wait_for
from tests.helpers.phase_probe import PhaseProbeWorkflow, ProbeInput


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
                BuildPhaseInput(plan_name="cli", phase_number=i + 1, agent_type="dev",
                                description=f"probe {i}"),
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
