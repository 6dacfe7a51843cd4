"""docs/AGENTS.md against the code: the example task file, the statuses, the exit codes.

The example is compared with a file the real worker writes for a real BuildPlanWorkflow phase,
and the completion command inside that file's `instruction` is run as an agent would run it.
"""

from __future__ import annotations

import base64
import re
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client

import agent_calls
import complete_activity
import program_exit
from activities import instructions, task_files
from activities.triage import parse_triage
from agent_calls import MAX_PROGRESS_LEN
from config import WorkerConfig
from harness.env import CLI, ROOT, build_plan_input, cli_env, running_worker, start_plan
from models import BuildPlanInput, BuildPlanResult, PhaseSpec
from program_exit import CLI_EXIT_CODES, EXIT_INTERRUPTED
from tests.helpers.checks import one_task_file
from tests.helpers.cli import heartbeat_details, shell
from tests.helpers.tasks import PER_TASK_KEYS, SPEC_KEYS

DOC = (ROOT / "docs" / "AGENTS.md").read_text(encoding="utf-8")
DOC_PYTHON = "/srv/temporal-build-worker/.venv/bin/python"
DOC_CLI = "/srv/temporal-build-worker/complete_activity.py"


def doc_example() -> dict[str, Any]:
    """The example task file: the first YAML block of the BuildPlan section."""
    section = DOC.split("## BuildPlan phase task", 1)[1]
    blocks = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    example = yaml.safe_load(blocks[0])
    assert isinstance(example, dict)
    return example


def table_after(heading: str) -> list[list[str]]:
    """Rows of the first Markdown table under `heading`, header and rule left out."""
    section = DOC.split(heading, 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break
    return rows[2:]


async def test_example_matches_a_real_phase_file(
    client: Client, config: WorkerConfig, address: str
) -> None:
    example = doc_example()
    phase = example["payload"]
    plan = BuildPlanInput(
        plan_name=phase["plan_name"],
        phases=[
            PhaseSpec(
                number=phase["phase_number"],
                agent_type=example["target_agent"],
                description=phase["description"],
                context_refs=phase["context_refs"],
            )
        ],
    )
    workflow_id = f"agents-doc-{uuid.uuid4()}"
    async with running_worker(client, config):
        handle = await start_plan(client, config.task_queue, plan, workflow_id=workflow_id)
        path = await one_task_file(config.agent_task_dir)
        real = task_files.load_task(path)

        # Run the success command of the instruction, as the instruction tells an agent to.
        command = real["payload"]["instruction"].splitlines()[1]
        await shell(command, cli_env(address, TASK_TOKEN=real["payload"]["task_token"]))
        assert await handle.result() == BuildPlanResult(status="complete", phases_run=1)

    assert re.fullmatch(rf"\d{{8}}-\d{{6}}-{real['id'][:8]}\.yml", path.name)
    assert set(real) == set(example) == SPEC_KEYS
    assert set(real["payload"]) == set(example["payload"])
    for key in sorted(SPEC_KEYS - PER_TASK_KEYS):
        assert real[key] == example[key], key
    for key in (
        "description",
        "plan_name",
        "phase_number",
        "context_refs",
        "activity_id",
        "attempt",
    ):
        assert real["payload"][key] == example["payload"][key], key
    assert real["payload"]["workflow_id"] == workflow_id
    assert [{k: v for k, v in h.items() if k != "timestamp"} for h in real["history"]] == [
        {k: v for k, v in h.items() if k != "timestamp"} for h in example["history"]
    ]
    assert uuid.UUID(real["id"]) and uuid.UUID(example["id"])
    for doc in (real, example):
        assert base64.b64decode(doc["payload"]["task_token"], validate=True)
    cli = str(Path(complete_activity.__file__).resolve())
    instruction = real["payload"]["instruction"].replace(sys.executable, DOC_PYTHON)
    assert instruction.replace(cli, DOC_CLI) == example["payload"]["instruction"]


def test_key_tables_list_the_example_keys() -> None:
    example = doc_example()
    top = {row[0].strip("`") for row in table_after("## BuildPlan phase task")}
    assert top == set(example)
    payload = {row[0].strip("`") for row in table_after("`payload` keys:")}
    assert payload == set(example["payload"])


def test_exit_codes_are_the_cli_codes() -> None:
    documented = {int(row[0]) for row in table_after("### Exit codes")}
    assert documented == CLI_EXIT_CODES
    in_usage = {int(m) for m in re.findall(r"^  (\d)  ", complete_activity.__doc__ or "", re.M)}
    assert in_usage == CLI_EXIT_CODES
    # every code the CLI's modules name is listed (Ctrl-C's 130 is documented below the table)
    named = {
        getattr(program_exit, name)
        for module in (complete_activity, agent_calls)
        for name in re.findall(r"\bEXIT_[A-Z]+\b", Path(str(module.__file__)).read_text())
    }
    assert named == CLI_EXIT_CODES | {EXIT_INTERRUPTED}
    assert f"an interrupted run exits {EXIT_INTERRUPTED}" in DOC


def test_statuses_are_the_protocol_vocabulary() -> None:
    documented = {row[0].strip("`") for row in table_after("## Statuses")}
    assert documented == {
        task_files.SUBMITTED,
        task_files.SUPERSEDED,
        task_files.CANCELLED,
        task_files.INPUT_REQUIRED,
        task_files.APPROVED,
        task_files.REJECTED,
        task_files.CHANGES_REQUESTED,
        task_files.IN_PROGRESS,
        task_files.COMPLETED,
        task_files.FAILED,
    }


def test_default_directory_is_the_config_default() -> None:
    from config import load_config

    assert load_config({"HOME": "/home/a"}).agent_task_dir == Path("/home/a/.claude/task-queue")
    assert "`AGENT_TASK_DIR`, default `~/.claude/task-queue/`" in DOC
    assert "## Pipeline task types" in DOC


def test_triage_example_parses() -> None:
    """The triage example agents copy is accepted by the parser the worker runs."""
    section = DOC.split("### The security audit", 1)[1]
    [block] = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    triage = parse_triage(block.encode())
    assert triage.blocks == ["container runs privileged"]
    assert triage.flags == ["plain strings work too"]


async def test_heartbeat_forms_run_as_documented(
    client: Client, config: WorkerConfig, address: str
) -> None:
    """Each documented heartbeat command, run by bash against a real phase, is recorded."""
    section = DOC.split("### Heartbeats", 1)[1].split("\n### ", 1)[0]
    [block] = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    commands = block.strip().splitlines()
    assert [c.split("heartbeat", 1)[0].split("complete_activity.py ", 1)[1] for c in commands] == [
        "--task-file <path of the task file> ",
        "- ",
        '"$TASK_TOKEN" ',
    ]
    assert f"at most {MAX_PROGRESS_LEN} characters" in section
    progress = "running the tests"
    async with running_worker(client, config):
        handle = await start_plan(
            client, config.task_queue, build_plan_input("agents-doc-heartbeat")
        )
        path = await one_task_file(config.agent_task_dir)
        token = task_files.load_task(path)["payload"]["task_token"]
        for i, command in enumerate(commands):
            line = (
                command.replace("complete_activity.py", f"{sys.executable} {CLI}")
                .replace("<path of the task file>", str(path))
                .replace(progress, f"{progress} {i}")
            )
            out, err = await shell(line, cli_env(address, TASK_TOKEN=token))
            assert token not in out + err
            assert await heartbeat_details(handle.id, address) == [f"{progress} {i}"]
        await handle.terminate("test over")


def test_heartbeat_paragraph_is_the_one_the_worker_writes() -> None:
    """The documented heartbeat paragraph, for AGENT_HEARTBEAT_TIMEOUT=300, is what a task
    file's instruction ends with (tests/test_agent_heartbeat.py runs the stages with it)."""
    section = DOC.split("### Heartbeat timeout", 1)[1].split("\n### ", 1)[0]
    [block] = re.findall(r"```text\n(.*?)```", section, flags=re.S)
    written = instructions.with_heartbeat("", timedelta(seconds=300)).lstrip("\n")
    cli = str(Path(complete_activity.__file__).resolve())
    written = written.replace(sys.executable, DOC_PYTHON).replace(cli, DOC_CLI)
    assert block == written + "\n"
    assert "`payload.heartbeat_seconds`" in section and "a third of the timeout" in section
    assert instructions.heartbeat_seconds(timedelta(seconds=300)) == 100
