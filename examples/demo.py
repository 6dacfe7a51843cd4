"""`make demo`: one BuildPipelineWorkflow with a flag and a block, on the product path.

A dev server, `worker.py` and `agent_runner.py` run as processes, as PM2 runs them; every stage
is done by examples/demo-agent.sh, a shell script the runner starts; an operator approves the
block with the `approve` update through the `temporal` CLI. Each stage is printed as it
happens, then the summary file. `--address HOST:PORT` uses a running server instead of
starting one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from dev_server import dev_server_command
from harness.env import make_config
from harness.worker_process import RUNNER, worker_command, worker_env
from models import BuildPipelineInput, BuildPipelineResult, PipelineStatus
from operator_view import update_command

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "examples" / "demo-agent.sh"
TEMPORAL = Path(sys.executable).parent / "temporal"
BEGAN = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - BEGAN:5.1f}s] {text}", flush=True)


def free_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def wait_until(
    check: object, what: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            raise SystemExit(f"demo: {what} did not come up")
        time.sleep(0.1)


def answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
    except OSError:
        return False
    return True


@contextmanager
def process(
    command: list[str], log: Path, env: dict[str, str] | None = None, ready: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child stopped with SIGINT (as PM2 stops it) when the block ends."""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        if ready:
            wait_until(lambda: f'"{ready}"' in log.read_text(errors="replace"), ready, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def setup(tmp: Path, address: str) -> dict[str, str]:
    """The environment PM2 would give both apps, and the files the demo's agents use."""
    config = make_config(
        tmp, address, task_queue=f"demo-{uuid.uuid4().hex[:8]}", block_poll_seconds=1
    )
    queue, work = config.agent_task_dir, tmp / "work"
    for directory in (queue, work):
        directory.mkdir(mode=0o700)
    matrix = config.send_matrix_script
    matrix.write_text(  # stands in for send-matrix.sh: one line per message
        f'#!/bin/sh\nprintf "Matrix #%s: %s\\n" "$1" "$(echo "$2" | tr -s "\\n" " ")" '
        f">> {tmp}/matrix.txt\n"
    )
    matrix.chmod(0o755)
    demo_agent = {"command": [str(AGENT)], "cwd": str(work), "timeout_seconds": 60}
    commands = {
        "claudebox": demo_agent,
        "dev": demo_agent,
        "security-agent": {
            **demo_agent,
            "env": {
                "DEMO_FLAG": "API key committed in config.yaml",
                "DEMO_BLOCK": "container runs privileged with host networking",
                "DEMO_INFO": "base image is two minor versions behind",
            },
        },
    }
    (tmp / "agent-commands.yml").write_text(yaml.safe_dump(commands))
    return worker_env(
        config,
        os.environ,
        AGENT_COMMANDS_FILE=str(tmp / "agent-commands.yml"),
        AGENT_RUNNER_HEARTBEAT_SECONDS="2",
    )


def originating_task(queue: Path) -> str:
    """The dispatcher's request that starts the pipeline; the block gate waits on it."""
    task_id = str(uuid.uuid4())
    (queue / f"20260101-000000-{task_id[:8]}.yml").write_text(
        yaml.safe_dump(
            {
                "id": task_id,
                "created": "2026-01-01T00:00:00+00:00",
                "source_agent": "dispatcher",
                "target_agent": "helm-build",
                "task_type": "build_request",
                "status": "submitted",
                "summary": "Build request: demo-build",
                "payload": {},
                "history": [],
            }
        )
    )
    return task_id


async def drive(env: dict[str, str]) -> str:
    """Start the pipeline, approve its block, and return its summary file's path."""
    client = await Client.connect(env["TEMPORAL_ADDRESS"], data_converter=pydantic_data_converter)
    task_id = originating_task(Path(env["AGENT_TASK_DIR"]))
    handle = await client.start_workflow(
        "BuildPipelineWorkflow",
        BuildPipelineInput(
            build_name="demo-build",
            plan_path="/plans/demo/plan.md",
            task_id=task_id,
            target_agent="dev",
        ),
        id=f"demo-{uuid.uuid4().hex[:8]}",
        task_queue=env["TASK_QUEUE"],
        result_type=BuildPipelineResult,
    )
    say(f"started BuildPipelineWorkflow {handle.id}")
    result_task = asyncio.ensure_future(handle.result())
    seen = ""
    while not result_task.done():
        status = await handle.query("status", result_type=PipelineStatus)
        if status.stage != seen:
            seen = status.stage
            say(
                f"stage: {seen}"
                + (f" ({len(status.flags)} flag(s) sent to the agent)" if seen == "fixes" else "")
            )
            if seen == "awaiting-approval":
                say(f"  blocked on: {status.blocks}")
                note = {"note": "privileged mode accepted", "by": "demo-operator"}
                approve = shlex.split(update_command(handle.id, "approve"))
                command = [str(TEMPORAL), *approve[1:], "--input", json.dumps(note)]
                say("  operator: " + " ".join(command[:8]) + " --input '...'")
                cli = await asyncio.create_subprocess_exec(
                    *command,
                    "--address",
                    env["TEMPORAL_ADDRESS"],
                    stdout=asyncio.subprocess.DEVNULL,
                )
                if await cli.wait() != 0:
                    raise SystemExit("demo: the approve update failed")
        await asyncio.sleep(0.1)
    result = await result_task
    say(f"result: {result.status}; summary at {result.summary_path}")
    return result.summary_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="a running Temporal server to use (host:port)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="build-demo-") as tmp_text:
        tmp = Path(tmp_text)
        address = args.address or free_address()
        env = setup(tmp, address)
        server = None
        if not args.address:
            say(f"starting a Temporal dev server at {address}")
            server = subprocess.Popen(
                dev_server_command(address, "default", tmp / "dev.db", headless=True),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_until(lambda: answers(address), "the dev server", server)
        try:
            say(f"task queue: {env['AGENT_TASK_DIR']}")
            with (
                process(worker_command(), tmp / "worker.log", env, "worker_started"),
                process(worker_command(RUNNER), tmp / "runner.log", env, "runner_started"),
            ):
                say("worker.py and agent_runner.py are up; agents: examples/demo-agent.sh")
                summary = asyncio.run(drive(env))
            print(Path(summary).read_text(), flush=True)
            for line in (tmp / "matrix.txt").read_text().splitlines():
                say(line)
            for event in map(json.loads, (tmp / "runner.log").read_text().splitlines()):
                if event.get("event") == "task_finished":
                    say(
                        f"runner: {Path(event['task_file']).name} ({event['agent']}) "
                        f"{event['status']}"
                    )
        finally:
            if server is not None:
                server.terminate()
                server.wait(15)
    say("done")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # interpreter teardown can crash once the Temporal runtime has run
