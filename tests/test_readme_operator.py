"""The operator's documented command starts a BuildPlanWorkflow that really runs to the end.

The command is taken verbatim from the README (the ```sh block after the marker line) or, until
the README carries it, from docs/snippets/start-build-plan.sh, and run by bash with the
`temporal` CLI of the venv against the test server.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from pathlib import Path

from temporalio.client import Client

from models import BuildPlanResult
from tests.conftest import BIN, ROOT, ScriptedAgent, make_config, running_worker, succeed_all

MARKER = "<!-- operator: start-build-plan -->"
SNIPPET = ROOT / "docs" / "snippets" / "start-build-plan.sh"


def readme_block(readme: str) -> str | None:
    """The ```sh block right after the marker line; None when the README has no marker."""
    lines = readme.splitlines()
    if MARKER not in (line.strip() for line in lines):
        return None
    start = [line.strip() for line in lines].index(MARKER) + 1
    while start < len(lines) and not lines[start].strip():
        start += 1
    assert start < len(lines) and lines[start].strip() == "```sh", (
        f"README: {MARKER} must be followed by a ```sh block")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "```")
    return "\n".join(lines[start + 1 : end]) + "\n"


def operator_command() -> str:
    snippet = SNIPPET.read_text(encoding="utf-8")
    block = readme_block((ROOT / "README.md").read_text(encoding="utf-8"))
    if block is None:
        return snippet
    assert block.strip() == snippet.strip(), "README block and docs/snippets/ differ"
    return block


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


async def test_operator_command_runs_a_build_plan(client: Client, tmp_path: Path,
                                                  address: str) -> None:
    command = operator_command()
    argv = shlex.split(command)
    assert argv[:3] == ["temporal", "workflow", "start"]
    assert option(argv, "--task-queue") == "helm-build"
    assert option(argv, "--type") == "BuildPlanWorkflow"
    workflow_id = option(argv, "--workflow-id")
    plan = json.loads(option(argv, "--input"))
    assert len(plan["phases"]) == 2

    config = make_config(tmp_path, address, task_queue="helm-build")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "TEMPORAL_ADDRESS": address, "TEMPORAL_NAMESPACE": "default"}
    async with running_worker(client, config), ScriptedAgent(
        config.agent_task_dir, address, succeed_all
    ) as agent:
        proc = await asyncio.create_subprocess_exec(
            "bash", "-euo", "pipefail", "-c", command, env=env, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, (out, err)
        handle = client.get_workflow_handle(workflow_id, result_type=BuildPlanResult)
        result = await asyncio.wait_for(handle.result(), 60)

    assert workflow_id in out.decode()
    assert result == BuildPlanResult(status="complete", phases_run=2)
    assert [t["target_agent"] for t in agent.handled] == [p["agent_type"] for p in plan["phases"]]
    assert [t["payload"]["description"] for t in agent.handled] == [
        p["description"] for p in plan["phases"]]
    assert [t["payload"]["context_refs"] for t in agent.handled] == [
        p.get("context_refs", []) for p in plan["phases"]]
    assert all(t["payload"]["plan_name"] == plan["plan_name"] for t in agent.handled)
    assert [code for _, code, _ in agent.results] == [0, 0]


def test_readme_block_is_found_after_the_marker() -> None:
    """The README form the test will read once the block is pasted in."""
    snippet = SNIPPET.read_text(encoding="utf-8")
    readme = f"# t\n\n```sh\nmake run\n```\n\n{MARKER}\n\n```sh\n{snippet}```\n\nmore\n"
    assert readme_block(readme) == snippet
    assert readme_block("# t\n```sh\nmake run\n```\n") is None
