"""The benchmarks' worker processes, both sides, and how to see that they poll.

The dev server is the tests' `DevServer`: the one `make run` starts, with the same pragmas.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from harness.env import ROOT, cli_env, make_config
from harness.worker_process import worker_command, worker_env

PYTHON = sys.executable
NAMESPACE = "default"
NO_OP = Path(shutil.which("true") or "/bin/true")  # send-matrix.sh: notifications go nowhere


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_worker(
    side: str, address: str, queue: str, workdir: Path, poll: float, slots: int | None = None
) -> subprocess.Popen[bytes]:
    """`worker.py` exactly as PM2 runs it (side "worker"), or the bare worker (side "bare")."""
    workdir.mkdir(parents=True, exist_ok=True)
    if side == "worker":
        command = worker_command()
        config = make_config(
            workdir, address, task_queue=queue, block_poll_seconds=poll, send_matrix_script=NO_OP
        )
        env = worker_env(config, LOG_LEVEL="INFO")
    else:
        command = [
            PYTHON,
            "-m",
            "bench.bare",
            "--address",
            address,
            "--queue",
            queue,
            "--dir",
            str(workdir / "task-queue"),
            "--poll",
            str(poll),
        ]
        if slots:
            command += ["--slots", str(slots)]
        env = cli_env(address, PYTHONUNBUFFERED="1")
    with (workdir / f"{side}.log").open("ab") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT)
        )


async def has_pollers(client: Client, queue: str) -> bool:
    """True once both a workflow and an activity poller have polled `queue`."""
    for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
        answer = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=NAMESPACE,
                task_queue=TaskQueue(name=queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
                task_queue_type=kind,
            )
        )
        if not answer.pollers:
            return False
    return True


async def wait_polling(
    client: Client,
    queue: str,
    proc: subprocess.Popen[bytes],
    timeout: float = 60,
    interval: float = 0.01,
) -> float:
    """Wait until the worker polls `queue`; returns the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    while not await has_pollers(client, queue):
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode} before polling")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no poller on {queue} within {timeout} s")
        await asyncio.sleep(interval)
    return time.monotonic()
