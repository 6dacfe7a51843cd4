"""Scripted agents and fixtures for BuildPipelineWorkflow tests, the demo and the benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client, WorkflowHandle

from activities import task_files
from config import WorkerConfig
from harness.agents import Decide, ScriptedAgent, new_tasks, worker_and_agent
from harness.env import TEMPORAL_BIN, cli_env, run_process
from models import BuildPipelineInput, BuildPipelineResult, PipelineStatus

TRIAGE_FILE = "triage-output.yml"


@dataclass
class PipelineScript:
    """What the scripted agents do: the triage they write, which stage fails, what they skip."""

    blocks: list[Any] = field(default_factory=list)
    flags: list[Any] = field(default_factory=list)
    info: list[Any] = field(default_factory=list)
    triage_text: str | None = None  # raw file content instead of blocks/flags/info
    write_triage: bool = True
    fail_task_type: str | None = None
    fail_first: int = 0  # with fail_task_type: fail only its first n dispatches (0 = all)
    ignore_task_types: tuple[str, ...] = ()
    closeout_path: str = "/tmp/closeout/report.md"
    failures: int = 0
    # review loops: the triage of audit rounds 2, 3... as {"blocks": [...], "flags": [...]};
    # a round past the list finds nothing. None: every round finds blocks/flags/info.
    later_rounds: list[dict[str, list[str]]] | None = None
    audits: int = 0

    def decide(self, task: dict[str, Any]) -> tuple[str, str] | None:
        kind = task["task_type"]
        if kind in self.ignore_task_types:
            return None
        if kind == self.fail_task_type and (not self.fail_first or self.failures < self.fail_first):
            self.failures += 1
            return ("failed", f"{kind} could not be done")
        if kind == "security_audit":
            self.audits += 1
            out = Path(task["payload"]["output_dir"])
            (out / "report.md").write_text(f"# report of audit {self.audits}\n")
            if self.write_triage:
                text = self.triage_text
                if text is None:
                    found = {"blocks": self.blocks, "flags": self.flags, "info": self.info}
                    if self.later_rounds is not None and self.audits > 1:
                        later = self.later_rounds[self.audits - 2 :]
                        found = later[0] if later else {}
                    text = yaml.safe_dump(found)
                (out / TRIAGE_FILE).write_text(text)
            return ("success", "audit-complete")
        if kind == "build_closeout":
            return ("success", self.closeout_path)
        return ("success", f"{kind}-done")


def originating_task(config: WorkerConfig, task_id: str | None = None) -> tuple[str, Path]:
    """The dispatcher's task file that started the pipeline (the one the block gate watches)."""
    task_id = task_id or str(uuid.uuid4())
    task = {
        "id": task_id,
        "created": "2026-11-24T00:00:00+00:00",
        "source_agent": "dispatcher",
        "target_agent": "helm-build",
        "task_type": "build_request",
        "status": "submitted",
        "summary": "Build request",
        "payload": {"note": "keep me"},
        "history": [
            {
                "timestamp": "2026-11-24T00:00:00+00:00",
                "status": "submitted",
                "actor": "dispatcher",
                "note": "created",
            }
        ],
    }
    task_files.ensure_private_dir(config.agent_task_dir)
    path = config.agent_task_dir / f"20261124-000000-{task_id[:8]}.yml"
    path.write_text(yaml.safe_dump(task))
    path.chmod(0o644)
    return task_id, path


def approve_by_file(path: Path, actor: str = "operator", note: str = "looks fine") -> None:
    """What an operator does by hand: set status approved, add a history entry."""
    task = yaml.safe_load(path.read_text())
    task["status"] = "approved"
    task["history"].append(
        {
            "timestamp": "2026-11-24T01:00:00+00:00",
            "status": "approved",
            "actor": actor,
            "note": note,
        }
    )
    path.write_text(yaml.safe_dump(task))


def pipeline_input(
    task_id: str,
    build_name: str = "demo-build",
    plan_path: str = "/plans/demo/plan.md",
    **options: Any,
) -> BuildPipelineInput:
    """The pipeline's input for the originating task `task_id`; `options` are its optional
    fields (failure_hold_seconds, max_audit_rounds, verify_fixes)."""
    return BuildPipelineInput(
        build_name=build_name,
        plan_path=plan_path,
        task_id=task_id,
        target_agent="dev",
        **options,
    )


def install_matrix_recorder(config: WorkerConfig) -> Path:
    """A send-matrix.sh that records each (room, message) as a JSON line."""
    record = config.send_matrix_script.with_suffix(".jsonl")
    script = config.send_matrix_script
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"with open({str(record)!r}, 'a') as fh:\n"
        "    fh.write(json.dumps({'room': sys.argv[1], 'message': sys.argv[2]}) + '\\n')\n"
    )
    script.chmod(0o755)
    return record


def matrix_messages(record: Path) -> list[dict[str, str]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line]


def held_messages(record: Path) -> list[str]:
    """The failure hold's `[HELD]` notifications among what the recorder got."""
    return [m["message"] for m in matrix_messages(record) if m["message"].startswith("[HELD]")]


def summary_of(path: str) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text())
    assert isinstance(data, dict)
    return data


def dispatched(config: WorkerConfig) -> list[dict[str, Any]]:
    """Task files the worker wrote, oldest first."""
    tasks = [task for _, task in new_tasks(config.agent_task_dir, set())]
    return sorted(tasks, key=lambda t: t["created"])


async def status_of(handle: WorkflowHandle) -> PipelineStatus:
    return await handle.query("status", result_type=PipelineStatus)


async def wait_stage(handle: WorkflowHandle, stage: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (await status_of(handle)).stage != stage:
        assert asyncio.get_running_loop().time() < deadline, f"never reached {stage}"
        await asyncio.sleep(0.1)


async def wait_listed(
    client: Client, handle: WorkflowHandle, stage: str, timeout: float = 10
) -> None:
    """Until a visibility query by the BuildStage search attribute finds the pipeline at `stage`,
    as the operator's inbox asks: visibility can lag the stage by a moment, so it asks again."""
    query = f"BuildStage='{stage}' AND WorkflowId='{handle.id}'"
    deadline = asyncio.get_running_loop().time() + timeout
    while [w.id async for w in client.list_workflows(query)] != [handle.id]:
        assert asyncio.get_running_loop().time() < deadline, f"never listed as {stage}"
        await asyncio.sleep(0.1)


async def start_pipeline(
    client: Client,
    config: WorkerConfig,
    task_id: str,
    *,
    workflow_id: str | None = None,
    **kw: Any,
) -> WorkflowHandle[Any, BuildPipelineResult]:
    """Start a BuildPipelineWorkflow for the originating task `task_id`, under `workflow_id` or a
    fresh `pipeline-<uuid>`; `kw` goes to `pipeline_input`."""
    return await client.start_workflow(
        "BuildPipelineWorkflow",
        pipeline_input(task_id, **kw),
        id=workflow_id or f"pipeline-{uuid.uuid4()}",
        task_queue=config.task_queue,
        result_type=BuildPipelineResult,
    )


@dataclass
class PipelineRun:
    """A pipeline `running_pipeline` started: its handle, the dispatcher's task file that
    started it (the one the block gate watches) and the agent answering its stages."""

    handle: WorkflowHandle[Any, BuildPipelineResult]
    task_id: str
    origin: Path
    agent: ScriptedAgent


@contextlib.asynccontextmanager
async def running_pipeline(
    client: Client,
    config: WorkerConfig,
    decide: Decide,
    worker: AbstractAsyncContextManager[Any] | None = None,
    **start: Any,
) -> AsyncIterator[PipelineRun]:
    """A BuildPipelineWorkflow for a fresh originating task, started under `worker_and_agent`
    (the production worker in this process unless `worker` is given); `start` goes to
    `start_pipeline`. Worker and agent stay for the block; the run's handle outlives it."""
    task_id, origin = originating_task(config)
    async with worker_and_agent(client, config, decide, worker) as agent:
        handle = await start_pipeline(client, config, task_id, **start)
        yield PipelineRun(handle, task_id, origin, agent)


async def temporal(address: str, *args: str) -> tuple[int, str, str]:
    """The operator's `temporal` CLI against `address`; returns (exit code, stdout, stderr)."""
    return await run_process([TEMPORAL_BIN, *args, "--address", address], cli_env(address))


async def update(address: str, workflow_id: str, name: str, *input_json: str) -> tuple[int, str]:
    """`temporal workflow update execute --name NAME [--input JSON]`: (exit code, output)."""
    extra = ["--input", input_json[0]] if input_json else []
    code, out, err = await temporal(
        address,
        "workflow",
        "update",
        "execute",
        "--workflow-id",
        workflow_id,
        "--name",
        name,
        *extra,
    )
    return code, out + err


def summaries(config: WorkerConfig) -> list[dict[str, Any]]:
    """Every summary the worker wrote under `config.summary_dir`."""
    return [summary_of(str(p)) for p in sorted(config.summary_dir.glob("*/*.yml"))]
