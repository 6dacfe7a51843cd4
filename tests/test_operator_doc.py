"""The operator commands of docs/OPERATIONS.md, run verbatim with the venv's `temporal` CLI
against the test server: a build plan runs to the end; a pipeline is started, queried, found in
the operator's inbox, approved; started again and rejected; a held stage is retried, skipped and
aborted."""

from __future__ import annotations

import asyncio
import json
import shlex
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from config import WorkerConfig
from harness.agents import Decision, succeed_all, worker_and_agent
from harness.env import ROOT, make_config
from harness.pipelines import PipelineScript, dispatched, originating_task, summary_of, wait_stage
from models import BuildPipelineResult, BuildPlanResult
from tests.helpers.checks import wait_for
from tests.helpers.cli import operator_env, shell

DOC = (ROOT / "docs" / "OPERATIONS.md").read_text(encoding="utf-8")


def readme_block(name: str) -> str:
    """The ```sh block right after the line `<!-- operator: NAME -->`."""
    marker = f"<!-- operator: {name} -->"
    lines = [line.strip() for line in DOC.splitlines()]
    assert marker in lines, f"docs/OPERATIONS.md has no {marker}"
    start = lines.index(marker) + 1
    while start < len(lines) and not lines[start]:
        start += 1
    assert lines[start] == "```sh", f"docs/OPERATIONS.md: {marker} needs a ```sh block after it"
    end = lines.index("```", start + 1)
    return "\n".join(DOC.splitlines()[start + 1 : end]) + "\n"


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


async def run_block(name: str, address: str, cwd: Path) -> str:
    """The documented block `name`, run as the operator runs it; its stdout."""
    out, _ = await shell(readme_block(name), operator_env(address), cwd)
    return out


def documented_pipeline(
    client: Client, tmp_path: Path, address: str, **settings: Any
) -> tuple[WorkerConfig, WorkflowHandle[Any, BuildPipelineResult]]:
    """What the start-pipeline block needs: a worker's settings on its task queue (with
    `settings`), the originating task its input names, and a handle on the id it starts."""
    argv = shlex.split(readme_block("start-pipeline"))
    build = json.loads(option(argv, "--input"))
    config = make_config(tmp_path, address, task_queue="helm-build", **settings)
    originating_task(config, build["task_id"])
    workflow_id = option(argv, "--workflow-id")
    return config, client.get_workflow_handle(workflow_id, result_type=BuildPipelineResult)


async def test_operator_command_runs_a_build_plan(
    client: Client, tmp_path: Path, address: str
) -> None:
    argv = shlex.split(readme_block("start-build-plan"))
    assert argv[:3] == ["temporal", "workflow", "start"]
    assert option(argv, "--task-queue") == "helm-build"
    assert option(argv, "--type") == "BuildPlanWorkflow"
    workflow_id = option(argv, "--workflow-id")
    plan = json.loads(option(argv, "--input"))
    assert len(plan["phases"]) == 2

    config = make_config(tmp_path, address, task_queue="helm-build")
    async with worker_and_agent(client, config, succeed_all) as agent:
        out = await run_block("start-build-plan", address, tmp_path)
        handle = client.get_workflow_handle(workflow_id, result_type=BuildPlanResult)
        result = await asyncio.wait_for(handle.result(), 60)

    assert workflow_id in out
    assert result == BuildPlanResult(status="complete", phases_run=2)
    assert [t["target_agent"] for t in agent.handled] == [p["agent_type"] for p in plan["phases"]]
    assert [t["payload"]["description"] for t in agent.handled] == [
        p["description"] for p in plan["phases"]
    ]
    assert [t["payload"]["context_refs"] for t in agent.handled] == [
        p.get("context_refs", []) for p in plan["phases"]
    ]
    assert [code for _, code, _ in agent.results] == [0, 0]


async def test_operator_commands_steer_a_pipeline(
    client: Client, tmp_path: Path, address: str
) -> None:
    argv = shlex.split(readme_block("start-pipeline"))
    assert option(argv, "--task-queue") == "helm-build"
    assert option(argv, "--type") == "BuildPipelineWorkflow"
    config, handle = documented_pipeline(client, tmp_path, address)
    script = PipelineScript(blocks=["debug port open"])
    async with worker_and_agent(client, config, script.decide):
        await run_block("start-pipeline", address, tmp_path)
        await wait_stage(handle, "awaiting-approval")
        status = await run_block("status", address, tmp_path)
        assert '"stage":"awaiting-approval"' in status.replace(" ", "")
        assert '"blocks":["debugportopen"]' in status.replace(" ", "")
        assert handle.id in await run_block("inbox", address, tmp_path)
        await run_block("approve", address, tmp_path)
        approved = await asyncio.wait_for(handle.result(), 60)
        approval = summary_of(approved.summary_path)["resolution"]
        assert handle.id not in await run_block("inbox", address, tmp_path)

        # the same id again (allowed once the first run closed), and this time a reject
        await run_block("start-pipeline", address, tmp_path)
        await wait_stage(handle, "awaiting-approval")
        await run_block("reject", address, tmp_path)
        rejected = await asyncio.wait_for(handle.result(), 60)

    assert approved.status == "complete"
    assert {k: approval[k] for k in ("decision", "via", "by", "note")} == {
        "decision": "approved",
        "via": "update",
        "by": "alice",
        "note": "risk accepted",
    }
    assert rejected.status == "rejected"
    assert summary_of(rejected.summary_path)["outcome"] == "rejected"


async def test_operator_commands_decide_a_held_stage(
    client: Client, tmp_path: Path, address: str
) -> None:
    """The documented retry, skip and abort, each on a stage held by FAILURE_HOLD."""
    config, handle = documented_pipeline(client, tmp_path, address, failure_hold_seconds=600)
    for name in ("retry", "skip", "abort"):
        assert option(shlex.split(readme_block(name)), "--workflow-id") == handle.id
    script = PipelineScript(fail_task_type="build_plan", fail_first=1)
    async with worker_and_agent(client, config, script.decide):
        await run_block("start-pipeline", address, tmp_path)
        await wait_stage(handle, "awaiting-retry")
        await run_block("retry", address, tmp_path)
        retried = await asyncio.wait_for(handle.result(), 60)
        note = [t for t in dispatched(config) if t["task_type"] == "build_plan"][-1]["payload"][
            "operator_note"
        ]

        script.fail_task_type, script.failures = "build_closeout", 0
        await run_block("start-pipeline", address, tmp_path)
        await wait_stage(handle, "awaiting-retry")
        await run_block("skip", address, tmp_path)
        skipped = await asyncio.wait_for(handle.result(), 60)
        skipped_summary = summary_of(skipped.summary_path)  # the same id: the next run rewrites it

        script.fail_task_type, script.fail_first = "build_prefab", 0
        await run_block("start-pipeline", address, tmp_path)
        await wait_stage(handle, "awaiting-retry")
        await run_block("abort", address, tmp_path)
        with pytest.raises(WorkflowFailureError) as aborted:
            await asyncio.wait_for(handle.result(), 60)

    assert retried.status == "complete" and note == "the cache is fixed"
    assert skipped_summary["skipped"] == ["close"]
    assert "aborted by alice: giving up" in str(aborted.value.cause)


async def test_operator_commands_steer_a_plan(client: Client, tmp_path: Path, address: str) -> None:
    """The documented plan commands: the status of a plan held at a failed phase, the retry
    that carries its note to the phase's new task file, then a cancel of the plan's next run
    that closes its open task file."""
    argv = shlex.split(readme_block("start-build-plan"))
    workflow_id = option(argv, "--workflow-id")
    for name in ("plan-status", "plan-retry", "plan-cancel"):
        assert option(shlex.split(readme_block(name)), "--workflow-id") == workflow_id
    config = make_config(tmp_path, address, task_queue="helm-build", failure_hold_seconds=600)
    handle = client.get_workflow_handle(workflow_id, result_type=BuildPlanResult)
    failed: list[str] = []

    def decide(task: dict[str, Any]) -> tuple[str, str] | None:
        if task["payload"]["phase_number"] == 2 and not failed:
            failed.append(task["id"])
            return ("failed", "the test suite is flaky")
        if failed and len(dispatched(config)) > 3:  # the second run's first phase: left open
            return None
        return ("success", "done")

    async with worker_and_agent(client, config, decide):
        await run_block("start-build-plan", address, tmp_path)
        await wait_stage(handle, "awaiting-retry")
        status = (await run_block("plan-status", address, tmp_path)).replace(" ", "")
        await run_block("plan-retry", address, tmp_path)
        result = await asyncio.wait_for(handle.result(), 60)
        retried = dispatched(config)[-1]

        await run_block("start-build-plan", address, tmp_path)
        await wait_for(lambda: len(dispatched(config)) == 4, 30, what="the next run's phase 1")
        await run_block("plan-cancel", address, tmp_path)
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 60)

    assert '"stage":"awaiting-retry"' in status and '"failed_stage":"phase-2"' in status
    assert '"failed_error":"thetestsuiteisflaky"' in status
    assert result == BuildPlanResult(status="complete", phases_run=2)
    assert retried["payload"]["operator_note"] == "the flaky test is fixed"
    assert dispatched(config)[-1]["status"] == "cancelled"


async def test_operator_commands_loop_a_review(
    client: Client, tmp_path: Path, address: str
) -> None:
    """The documented request_changes, then the documented rerun at the next wait at the gate:
    round 2 still finds a block, the rerun from implement is round 3, which is clean."""
    config, handle = documented_pipeline(client, tmp_path, address)
    for name in ("request-changes", "rerun"):
        assert option(shlex.split(readme_block(name)), "--workflow-id") == handle.id
    script = PipelineScript(blocks=["debug port open"], later_rounds=[{"blocks": ["still open"]}])
    async with worker_and_agent(client, config, script.decide):
        await run_block("start-pipeline", address, tmp_path)
        await wait_stage(handle, "awaiting-approval")
        await run_block("request-changes", address, tmp_path)
        await wait_for(lambda: script.audits == 2, 30, what="audit round 2")
        await wait_stage(handle, "awaiting-approval")
        await run_block("rerun", address, tmp_path)
        result = await asyncio.wait_for(handle.result(), 60)

    fix = next(t for t in dispatched(config) if t["task_type"] == "security_fix")
    assert fix["payload"]["operator_note"] == "keep the key out of the image"
    implement = [t for t in dispatched(config) if t["task_type"] == "build_plan"]
    assert implement[-1]["payload"]["operator_note"] == "use the v2 API"
    assert result.status == "complete"
    rounds = summary_of(result.summary_path)["rounds"]
    assert [(r["trigger"], r["by"]) for r in rounds] == [
        ("first", ""),
        ("changes-requested", "alice"),
        ("rerun", "alice"),
    ]


async def test_operator_command_raises_a_budget(
    client: Client, tmp_path: Path, address: str
) -> None:
    """The documented raise_budget, on a pipeline parked at the worker's budget."""
    config, handle = documented_pipeline(
        client, tmp_path, address, budget_usd=0.05, failure_hold_seconds=600
    )
    assert option(shlex.split(readme_block("raise-budget")), "--workflow-id") == handle.id
    script = PipelineScript()

    def decide(task: dict[str, Any]) -> Decision:
        answer = script.decide(task)
        return None if answer is None else (answer[0], answer[1], '{"cost_usd": 0.1}')

    async with worker_and_agent(client, config, decide):
        await run_block("start-pipeline", address, tmp_path)
        await wait_stage(handle, "awaiting-budget")
        await run_block("raise-budget", address, tmp_path)
        result = await asyncio.wait_for(handle.result(), 60)
    summary = summary_of(result.summary_path)
    assert result.status == "complete" and summary["budget_usd"] == 40
    assert summary["usage"]["cost_usd"] == 0.4  # prefab, implement, audit, close at $0.10
