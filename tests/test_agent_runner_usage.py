"""What agents cost, through the real path: worker.py and agent_runner.py as processes on the dev
server, running fake `claude` and `codex` CLIs that print the documented output shapes. The
usage the runner reads travels in each stage's completion, as the history shows it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client, WorkflowHandle

from activities import task_files
from config import WorkerConfig
from harness.worker_process import WorkerProcess, worker_env
from tests.helpers.checks import failure_of, task_files_in, wait_for
from tests.helpers.completions import completions, failures
from tests.helpers.fake_agents import (
    claude_result,
    claude_stream,
    codex_events,
    fake_claude,
    fake_codex,
    recorded,
)
from tests.helpers.runner import (
    runner_env,
    runner_process,
    start_agent_plan,
    worker_and_runner,
    write_commands,
)

pytestmark = pytest.mark.timeout(120)

CLAUDE_TEXT = "The build is complete and verified."
CLAUDE_USAGE = {
    "cost_usd": 0.0421,
    "input_tokens": 1500,
    "output_tokens": 800,
    "cache_read_tokens": 5000,
    "turns": 4,
}


def claude_entry(claude: Path, record: Path, *flags: str, **env: str) -> dict[str, Any]:
    return {
        "command": [str(claude), "-p", *flags, "$TASK_INSTRUCTION"],
        "output": "claude-json",
        "env": {"FAKE_RECORD": str(record), "FAKE_RESULT": json.dumps(claude_result()), **env},
    }


async def ended(handle: WorkflowHandle[Any, Any]) -> str:
    """`complete`, or the plan's failure message."""
    try:
        return str((await asyncio.wait_for(handle.result(), 60)).status)
    except Exception:  # noqa: BLE001 - the failure, read below
        return (await failure_of(handle)).message


def with_budget(path: Path, budget: float) -> None:
    """The pipeline's remaining budget in the task's payload, as a budgeted pipeline gives it."""
    task = task_files.load_task(path)
    task["payload"]["budget_remaining_usd"] = budget
    task_files.write_text_atomic(path, task_files.dump_yaml(task))


async def test_each_output_format_reports_its_usage_in_the_completion(
    client: Client, config: WorkerConfig, tmp_path: Path
) -> None:
    """One plan per agent entry, all run by one runner: claude json (with the task's budget),
    stream-json ending in an error result that exits 0, codex JSONL of two turns at the entry's
    prices, and a TASK_USAGE_FILE that wins over the output."""
    record = tmp_path / "record"
    claude, codex = fake_claude(tmp_path / "claude"), fake_codex(tmp_path / "codex")
    max_turns = claude_result(subtype="error_max_turns", is_error=True, num_turns=10)
    del max_turns["result"]
    written = {"cost_usd": 0.42, "input_tokens": 1200, "output_tokens": 800}
    agents = {
        "claude-json": claude_entry(
            claude,
            record,
            "--output-format",
            "json",
            "--max-budget-usd",
            "$TASK_BUDGET_REMAINING_USD",
        ),
        "claude-stream": claude_entry(
            claude,
            record,
            "--output-format",
            "stream-json",
            FAKE_STREAM=json.dumps(claude_stream(max_turns)),
        ),
        "codex": {
            "command": [str(codex), "exec", "--json", "$TASK_INSTRUCTION"],
            "output": "codex-jsonl",
            "prices": {"input": 1.25, "cached_input": 0.125, "output": 10},
            "env": {
                "FAKE_RECORD": str(record),
                "FAKE_EVENTS": json.dumps(
                    codex_events([(24763, 24448, 122), (30000, 1000, 2500)], "Phase 1 is done.")
                ),
            },
        },
        "usage-file": claude_entry(
            claude, record, "--output-format", "json", FAKE_USAGE_FILE=json.dumps(written)
        ),
    }
    commands = write_commands(tmp_path / "agents.yml", agents)
    logs = tmp_path / "logs"
    queue = config.agent_task_dir
    async with WorkerProcess(worker_env(config), logs):
        plans = {name: await start_agent_plan(client, config, name) for name in agents}
        await wait_for(lambda: len(task_files_in(queue)) == len(agents), what="the task files")
        files = {str(task_files.load_task(p)["target_agent"]): p for p in task_files_in(queue)}
        with_budget(files["claude-json"], 2.5)
        async with runner_process(runner_env(config, commands), logs) as runner:
            results = dict(
                zip(plans, await asyncio.gather(*map(ended, plans.values())), strict=True)
            )

    assert results == {
        "claude-json": "complete",
        "claude-stream": "Phase 1 failed: agent claude-stream ended with an error result, "
        "error_max_turns",
        "codex": "complete",
        "usage-file": "complete",
    }
    assert await completions(plans["claude-json"]) == [
        {"status": "success", "output": CLAUDE_TEXT, "usage": CLAUDE_USAGE}
    ]
    assert await failures(plans["claude-stream"]) == [
        (
            "agent claude-stream ended with an error result, error_max_turns",
            [{"usage": {**CLAUDE_USAGE, "turns": 10}}],
        )
    ]
    fresh, cached, output = 54763 - 25448, 25448, 2622
    assert await completions(plans["codex"]) == [
        {
            "status": "success",
            "output": "Phase 1 is done.",
            "usage": {
                "input_tokens": fresh,
                "output_tokens": output,
                "cache_read_tokens": cached,
                "turns": 2,
                "cost_usd": 0.066045,
            },
        }
    ]
    assert await completions(plans["usage-file"]) == [
        {"status": "success", "output": CLAUDE_TEXT, "usage": {**written, "cost_usd": 0.42}}
    ]
    assert runner.events("agent_output_unread") == []
    assert runner.events("usage_file_unread") == []
    for name in agents:
        task = task_files.load_task(files[name])
        assert task["status"] == ("failed" if name == "claude-stream" else "completed")

    # what the claude-json agent was given: the budget, and an instruction of its own
    queued = task_files.load_task(files["claude-json"])
    given = recorded(record, queued["id"])
    budget_at = given["argv"].index("--max-budget-usd")
    assert given["argv"][budget_at + 1] == given["env"]["TASK_BUDGET_REMAINING_USD"] == "2.5"
    instruction = given["env"]["TASK_INSTRUCTION"]
    assert "complete_activity" not in instruction and "TASK_TOKEN" not in instruction
    assert given["env"]["TASK_RESULT_FILE"] in instruction
    assert "exit with status 0" in instruction
    copy = yaml.safe_load(given["task_file"])
    assert copy["payload"]["instruction"] == instruction
    assert "task_token" not in copy["payload"]
    assert queued["payload"]["task_token"] not in given["task_file"]
    assert given["env"]["TASK_FILE"] != str(files["claude-json"])
    # the queued file keeps the worker's instruction, for agents the runner does not run
    assert "complete_activity.py" in queued["payload"]["instruction"]
    assert '"$TASK_TOKEN" success' in queued["payload"]["instruction"]
    assert "TASK_BUDGET_REMAINING_USD" not in recorded(record, _id(files["codex"]))["env"]


def _id(path: Path) -> str:
    return str(task_files.load_task(path)["id"])


async def test_output_that_does_not_read_is_one_warning_and_the_exit_status_decides(
    client: Client, config: WorkerConfig, tmp_path: Path
) -> None:
    """claude-json declared, plain text printed: exit 0 completes with the last line and no
    usage, exit 3 fails the stage as always; one warning each."""
    record = tmp_path / "record"
    claude = fake_claude(tmp_path / "claude")
    agents = {
        "succeeds": claude_entry(claude, record),
        "fails": claude_entry(claude, record, FAKE_EXIT="3"),
    }
    async with worker_and_runner(config, tmp_path, agents) as runner:
        plans = {name: await start_agent_plan(client, config, name) for name in agents}
        results = dict(zip(plans, await asyncio.gather(*map(ended, plans.values())), strict=True))
    assert results == {
        "succeeds": "complete",
        "fails": f"Phase 1 failed: agent fails exited with code 3; last output: starting | "
        f"{CLAUDE_TEXT}",
    }
    assert await completions(plans["succeeds"]) == [{"status": "success", "output": CLAUDE_TEXT}]
    assert await failures(plans["fails"]) == [
        (f"agent fails exited with code 3; last output: starting | {CLAUDE_TEXT}", [])
    ]
    warnings = runner.events("agent_output_unread")
    assert sorted(w["agent"] for w in warnings) == ["fails", "succeeds"]
    for warning in warnings:
        assert warning["level"] == "warning"
        assert warning["problem"] == "no result object (`type: result`) in the output"
    finished = {e["agent"]: e for e in runner.events("task_finished")}
    assert finished["succeeds"]["usage"] is None
