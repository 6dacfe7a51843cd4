"""`make run` as an operator uses it: an embedded dev server on SQLite, the worker in the
foreground, Ctrl-C stopping both, and a pipeline that outlives the restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import uuid
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from harness.agents import ScriptedAgent, succeed_all
from harness.env import ROOT, free_port, make_config
from harness.worker_process import worker_env
from models import BuildPlanInput, BuildPlanResult, PhaseSpec
from tests.helpers.checks import wait_for


def answers(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class MakeRun:
    """`make run` in its own process group, so Ctrl-C reaches make, worker and server alike."""

    def __init__(self, env: dict[str, str], state: Path) -> None:
        self.env, self.state = env, state
        self.lines: list[str] = []

    def events(self) -> list[str]:
        found = []
        for line in self.lines:
            if line.startswith("{"):
                found.append(json.loads(line).get("event", ""))
        return found

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "make",
            "-s",
            "run",
            f"RUN_ARGS=--dev-server-dir {self.state}",
            cwd=ROOT,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self.reader = asyncio.create_task(self._read())
        await wait_for(
            lambda: "worker_started" in self.events() or self.proc.returncode is not None,
            timeout=90,
        )
        assert "worker_started" in self.events(), self.lines

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    async def ctrl_c(self) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)
        code = await asyncio.wait_for(self.proc.wait(), 60)
        await self.reader
        return code


async def test_make_run_starts_dev_server_and_ctrl_c_stops_both(tmp_path: Path) -> None:
    port = free_port()
    config = make_config(tmp_path, f"127.0.0.1:{port}", task_queue="helm-build")
    # TEMPORAL_ADDRESS is a free port: nothing answers there, so `make run` starts its server
    env = worker_env(config, TEMPORAL_DEV_HEADLESS="1")
    state = tmp_path / "state"
    first = MakeRun(env, state)
    await first.start()
    assert "dev_server_started" in first.events()
    assert (state / "dev.db").exists()

    client = await Client.connect(config.temporal_address, data_converter=pydantic_data_converter)
    plan = BuildPlanInput(
        plan_name="restart",
        phases=[PhaseSpec(number=1, agent_type="dev", description="survive a restart")],
    )
    workflow_id = f"make-run-{uuid.uuid4()}"
    await client.start_workflow("BuildPlanWorkflow", plan, id=workflow_id, task_queue="helm-build")
    await wait_for(lambda: any(config.agent_task_dir.glob("*.yml")), timeout=30)

    # make itself dies of the SIGINT (as GNU make does); what counts is what it ran
    assert await first.ctrl_c() in (0, -signal.SIGINT)
    assert {"worker_stopped", "dev_server_stopped"} <= set(first.events()), first.lines
    assert not answers(port)  # the dev server went with the worker

    second = MakeRun(env, state)
    await second.start()
    try:
        client = await Client.connect(
            config.temporal_address, data_converter=pydantic_data_converter
        )
        async with ScriptedAgent(config.agent_task_dir, config.temporal_address, succeed_all):
            handle = client.get_workflow_handle(workflow_id, result_type=BuildPlanResult)
            result = await asyncio.wait_for(handle.result(), 60)
    finally:
        await second.ctrl_c()
    assert result == BuildPlanResult(status="complete", phases_run=1)
    assert not answers(port)
