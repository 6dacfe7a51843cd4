"""The agent runner's pure parts: AGENT_COMMANDS_FILE validation, its settings, what an agent
process receives (environment and expanded arguments), and what an exit means for a stage."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from exceptions import ConfigError
from harness.env import ROOT
from runner.agent_env import agent_environment, env_name, expand, expand_command
from runner.config import (
    DEFAULT_HEARTBEAT_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    AgentCommand,
    AgentEntry,
    OutputFormat,
    Prices,
    RunnerSettings,
    load_commands,
    load_settings,
    parse_commands,
)
from runner.outcomes import exit_outcome, heartbeat_interval, run_outcome, token_of
from runner.usage import Report
from tests.helpers.docs import first_column_names

pytestmark = pytest.mark.unit

HOME = Path("/home/op")
SRC = "AGENT_COMMANDS_FILE f"
PRICES = {"input": 1.25, "cached_input": 0.125, "output": 10}
PRICES_RULE = (
    "must map input, cached_input and output to US dollars per million tokens (numbers >= 0)"
)


def parse(data: Any) -> dict[str, AgentCommand]:
    return parse_commands(data, SRC, HOME)


def test_the_issue_example_parses_with_defaults() -> None:
    agents = parse(
        {
            "dev": {
                "command": ["claude", "-p", "$TASK_INSTRUCTION"],
                "cwd": "~/src",
                "timeout_seconds": 14400,
                "concurrency": 1,
            },
            "ops": {"command": ["aider"]},
        }
    )
    assert agents["dev"] == AgentCommand(
        name="dev",
        command=("claude", "-p", "$TASK_INSTRUCTION"),
        cwd=HOME / "src",
        timeout_seconds=14400.0,
        concurrency=1,
        rerun_on_restart=False,
        env={},
        output="text",
        prices=None,
    )
    ops = agents["ops"]
    assert (ops.cwd, ops.timeout_seconds, ops.concurrency, ops.rerun_on_restart) == (
        None,
        DEFAULT_TIMEOUT_SECONDS,
        1,
        False,
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, f"{SRC} must be a YAML mapping of agent names to their commands"),
        ([], f"{SRC} must be a YAML mapping of agent names to their commands"),
        ({"dev": None}, f"{SRC}: dev must be a mapping with at least `command`"),
        (
            {"dev": {"command": "claude -p x"}},
            f"{SRC}: dev.command must be a list of arguments (no shell), not a string",
        ),
        ({"dev": {"command": []}}, f"{SRC}: dev.command must be a non-empty list of strings"),
        ({"dev": {"command": ["a", 1]}}, f"{SRC}: dev.command must be a non-empty list of strings"),
        (
            {"dev": {"command": ["a"], "timeout": 3}},
            f"{SRC}: dev: unknown key 'timeout' (known: command, cwd, timeout_seconds, "
            "concurrency, rerun_on_restart, env, output, prices)",
        ),
        (  # a misspelt key is named, not the `command` it leaves out
            {"dev": {"comand": ["a"]}},
            f"{SRC}: dev: unknown key 'comand' (known: command, cwd, timeout_seconds, "
            "concurrency, rerun_on_restart, env, output, prices)",
        ),
        ({"dev": {"command": [""]}}, f"{SRC}: dev.command must be a non-empty list of strings"),
        ({"dev": {"command": ["a"], "cwd": ""}}, f"{SRC}: dev.cwd must be a directory path"),
        (
            {"dev": {"command": ["a"], "timeout_seconds": float("nan")}},
            f"{SRC}: dev.timeout_seconds must be a number greater than 0, not nan",
        ),
        (
            {"dev": {"command": ["a"], "env": {"X": None}}},
            f"{SRC}: dev.env must map variable names to strings",
        ),
        (
            {"dev": {"command": ["a"], "timeout_seconds": 0}},
            f"{SRC}: dev.timeout_seconds must be a number greater than 0, not 0",
        ),
        (
            {"dev": {"command": ["a"], "timeout_seconds": "1h"}},
            f"{SRC}: dev.timeout_seconds must be a number greater than 0, not '1h'",
        ),
        (
            {"dev": {"command": ["a"], "concurrency": 1.5}},
            f"{SRC}: dev.concurrency must be an integer greater than 0, not 1.5",
        ),
        (
            {"dev": {"command": ["a"], "concurrency": True}},
            f"{SRC}: dev.concurrency must be an integer greater than 0, not True",
        ),
        (
            {"dev": {"command": ["a"], "rerun_on_restart": "yes"}},
            f"{SRC}: dev.rerun_on_restart must be true or false",
        ),
        (
            {"dev": {"command": ["a"], "env": {"1X": "y"}}},
            f"{SRC}: dev.env must map variable names to strings",
        ),
        (
            {"../x": {"command": ["a"]}},
            f"{SRC}: agent name '../x' must be 1-64 letters, digits, . _ -",
        ),
        (
            {"dev": {"command": ["a"], "output": "json"}},
            f"{SRC}: dev.output must be text, claude-json or codex-jsonl",
        ),
        (  # claude-json output carries its cost
            {"dev": {"command": ["a"], "output": "claude-json", "prices": PRICES}},
            f"{SRC}: dev.prices are read only with output: codex-jsonl",
        ),
        (  # text output, the default, has no tokens to price
            {"dev": {"command": ["a"], "prices": PRICES}},
            f"{SRC}: dev.prices are read only with output: codex-jsonl",
        ),
        (
            {"dev": {"command": ["a"], "output": "codex-jsonl", "prices": {"input": 1.25}}},
            f"{SRC}: dev.prices {PRICES_RULE}",
        ),
        (
            {"dev": {"command": ["a"], "output": "codex-jsonl", "prices": {**PRICES, "x": 1}}},
            f"{SRC}: dev.prices {PRICES_RULE}",
        ),
        (
            {"dev": {"command": ["a"], "output": "codex-jsonl", "prices": {**PRICES, "input": -1}}},
            f"{SRC}: dev.prices {PRICES_RULE}",
        ),
        (
            {"dev": {"command": ["a"], "output": "codex-jsonl", "prices": "cheap"}},
            f"{SRC}: dev.prices {PRICES_RULE}",
        ),
    ],
)
def test_bad_entries_are_one_line_naming_the_key(data: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(data)
    assert str(caught.value) == message


def test_env_values_are_text_and_an_empty_env_is_none() -> None:
    """YAML reads unquoted numbers and booleans as such: passed on as their text, as always."""
    agents = parse(
        {
            "dev": {"command": ["a"], "env": {"N": 3, "F": 0.5, "B": True}},
            "ops": {"command": ["b"], "env": None},
        }
    )
    assert agents["dev"].env == {"N": "3", "F": "0.5", "B": "True"}
    assert agents["ops"].env == {}


def test_a_codex_entry_with_its_prices() -> None:
    """YAML's whole numbers are prices too."""
    agent = parse({"dev": {"command": ["codex"], "output": "codex-jsonl", "prices": PRICES}})["dev"]
    assert agent.output == "codex-jsonl"
    assert agent.prices is not None
    assert (agent.prices.input, agent.prices.cached_input, agent.prices.output) == (
        1.25,
        0.125,
        10.0,
    )
    assert parse({"dev": {"command": ["codex"], "output": "codex-jsonl"}})["dev"].prices is None


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(ConfigError, match=r"^AGENT_COMMANDS_FILE .*nope.yml cannot be read: No"):
        load_commands(missing, HOME)
    bad = tmp_path / "bad.yml"
    bad.write_text("dev: [unclosed\n")
    with pytest.raises(ConfigError, match=r"^AGENT_COMMANDS_FILE .*bad.yml is not valid YAML: "):
        load_commands(bad, HOME)


def test_settings_from_the_environment() -> None:
    env = {
        "AGENT_COMMANDS_FILE": "~/agents.yml",
        "HOME": str(HOME),
        "AGENT_TASK_DIR": "/q/task-queue",
        "AGENT_RUNNER_ID": "box-1",
    }
    settings = load_settings(env)
    assert settings.task_dir == Path("/q/task-queue")
    assert settings.log_dir == Path("/q/task-queue-logs")  # beside the queue, not in it
    assert settings.runner_id == "box-1"
    assert settings.heartbeat_seconds == DEFAULT_HEARTBEAT_SECONDS
    assert load_settings({**env, "AGENT_RUNNER_CONCURRENCY": "7"}).global_concurrency == 7


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"AGENT_COMMANDS_FILE": ""}, "AGENT_COMMANDS_FILE is not set"),
        (
            {"AGENT_RUNNER_CONCURRENCY": "0"},
            "AGENT_RUNNER_CONCURRENCY='0' must be an integer greater than 0",
        ),
        ({"AGENT_RUNNER_CONCURRENCY": "two"}, "AGENT_RUNNER_CONCURRENCY='two' is not an integer"),
        (
            {"AGENT_RUNNER_HEARTBEAT_SECONDS": "-1"},
            "AGENT_RUNNER_HEARTBEAT_SECONDS='-1' must be a number greater than 0",
        ),
        ({"AGENT_RUNNER_ID": "a b"}, "AGENT_RUNNER_ID='a b' may hold"),
    ],
)
def test_bad_settings(extra: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"AGENT_COMMANDS_FILE": "/a.yml", **extra})
    assert str(caught.value).startswith(message)


TOKEN = base64.b64encode(b"secret-token-bytes").decode()


def audit_task() -> dict[str, Any]:
    return {
        "id": "3f2a9c1b-x",
        "task_type": "security_audit",
        "summary": "Audit",
        "payload": {
            "build_name": "b1",
            "output_dir": "/a/b1",
            "attempt": 1,
            "instruction": "Audit it.",
            "flags": ["x"],
            "ready": True,
            "nothing": None,
            "task_token": TOKEN,
            "odd-key.x": "v",
        },
    }


def test_agent_environment_holds_the_task_but_never_the_token() -> None:
    base = {
        "PATH": "/bin",
        "TASK_TOKEN": "stale",
        "VAULT_ROLE_ID": "r",
        "AGENT_RUNNER_ID": "a",
        "TEMPORAL_ADDRESS": "h:1",
    }
    env = agent_environment(
        base,
        audit_task(),
        Path("/q/t.yml"),
        Path("/l/t.result"),
        Path("/l/t.usage"),
        {"MODEL": "big"},
    )
    assert env == {
        "PATH": "/bin",
        "TEMPORAL_ADDRESS": "h:1",
        "MODEL": "big",
        "TASK_BUILD_NAME": "b1",
        "TASK_OUTPUT_DIR": "/a/b1",
        "TASK_ATTEMPT": "1",
        "TASK_READY": "true",
        "TASK_ODD_KEY_X": "v",
        "TASK_FILE": "/q/t.yml",
        "TASK_INSTRUCTION": "Audit it.",
        "TASK_RESULT_FILE": "/l/t.result",
        "TASK_USAGE_FILE": "/l/t.usage",
        "TASK_ID": "3f2a9c1b-x",
        "TASK_TYPE": "security_audit",
    }
    assert TOKEN not in str(env)


def test_a_phase_without_instruction_gets_its_description() -> None:
    task = {"summary": "Build phase 1: x", "payload": {"description": "scaffold it"}}
    env = agent_environment({}, task, Path("t.yml"), Path("t.result"), Path("t.usage"))
    assert env["TASK_INSTRUCTION"] == "scaffold it"
    assert env_name("phase_number") == "TASK_PHASE_NUMBER"


@pytest.mark.parametrize(
    ("budget", "exported"),
    [
        (2.5, "2.5"),
        (3, "3"),
        (0, "0"),
        (0.00001, "0.00001"),  # never 1e-05, which an agent CLI may refuse
        (12.3456789, "12.345679"),
        (-1, None),
        (float("nan"), None),
        (True, None),
        ("5", None),
        (None, None),
    ],
)
def test_the_remaining_budget_is_a_plain_number(budget: Any, exported: str | None) -> None:
    task = {"payload": {"budget_remaining_usd": budget}}
    env = agent_environment({}, task, Path("t"), Path("r"), Path("u"))
    assert env.get("TASK_BUDGET_REMAINING_USD") == exported
    # the entry's `env` may hold a default for tasks without a budget; the task's own wins
    default = {"TASK_BUDGET_REMAINING_USD": "1"}
    env = agent_environment({}, task, Path("t"), Path("r"), Path("u"), default)
    assert env["TASK_BUDGET_REMAINING_USD"] == ("1" if exported is None else exported)


def test_expansion_is_per_argument_without_a_shell() -> None:
    env = {"TASK_INSTRUCTION": "do it; rm -rf / $(x)", "N": "3"}
    assert expand_command(
        ["claude", "-p", "$TASK_INSTRUCTION", "--n=${N}x", "$$N", "$UNSET."], env
    ) == ["claude", "-p", "do it; rm -rf / $(x)", "--n=3x", "$N", "."]
    assert expand("$TASK_INSTRUCTION", {"TASK_INSTRUCTION": "$N"}) == "$N"  # expanded once


def test_exit_outcomes() -> None:
    ok = exit_outcome(0, "dev", "  the result\n", ["a", "last"])
    assert (ok.status, ok.deliver, ok.output) == ("completed", "complete", "the result")
    assert exit_outcome(0, "dev", "", ["a", "last"]).output == "last"
    assert exit_outcome(0, "dev", "", []).output == ""
    failed = exit_outcome(2, "dev", "ignored", [str(n) for n in range(8)])
    assert (failed.status, failed.deliver) == ("failed", "fail")
    assert failed.note == "agent dev exited with code 2; last output: 3 | 4 | 5 | 6 | 7"
    assert exit_outcome(-9, "dev", "", []).note == (
        "agent dev was killed by signal 9; last output: no output"
    )


def test_run_outcomes_with_the_output_read() -> None:
    """An error result fails the stage whatever the exit status; the output's text stands in
    for the last line, after the result file; the usage goes with either outcome."""
    usage: Any = {"cost_usd": 0.5, "turns": 3}
    error = Report(usage, None, "error_max_turns")
    for code in (0, 1):
        failed = run_outcome(code, "dev", "", ['{"type":"result"}'], error, usage)
        assert (failed.status, failed.deliver, failed.usage) == ("failed", "fail", usage)
        assert failed.note == "agent dev ended with an error result, error_max_turns"
    said = run_outcome(
        0, "dev", "", [], Report(None, "  it broke\n", "error_during_execution"), None
    )
    assert said.note == "agent dev ended with an error result, error_during_execution: it broke"
    text = Report(usage, "all done")
    done = run_outcome(0, "dev", "", ['{"type":"result"}'], text, usage)
    assert (done.status, done.output, done.usage) == ("completed", "all done", usage)
    assert run_outcome(0, "dev", "/a/closeout.md\n", [], text, usage).output == "/a/closeout.md"
    nonzero = run_outcome(2, "dev", "", ["boom"], text, usage)
    assert (nonzero.deliver, nonzero.note, nonzero.usage) == (
        "fail",
        "agent dev exited with code 2; last output: boom",
        usage,
    )
    plain = run_outcome(0, "dev", "", ["last"], Report(), None)
    assert (plain.output, plain.usage) == ("last", None)


def test_token_and_heartbeat_interval_from_the_task() -> None:
    assert token_of(audit_task()) == b"secret-token-bytes"
    assert token_of({"payload": {"task_token": "not base64!"}}) is None
    assert token_of({"payload": {}}) is None
    assert token_of({"payload": "x"}) is None
    assert heartbeat_interval({"payload": {"heartbeat_seconds": 20}}, 30.0) == 20.0
    assert heartbeat_interval({"payload": {"heartbeat_seconds": True}}, 30.0) == 30.0
    assert heartbeat_interval({"payload": {}}, 30.0) == 30.0


def _block_after(text: str, marker: str) -> str:
    after = text.split(marker, 1)[1]
    return re.findall(r"```sh\n(.*?)```", after, flags=re.S)[0]


def test_operations_doc_names_each_output_format() -> None:
    doc = (ROOT / "docs" / "OPERATIONS.md").read_text().split("### What agents cost", 1)[1]
    table = doc.split("| `output` | For |", 1)[1].split("\n\n", 1)[0]
    formats = [row.split("|")[1].split("`")[1] for row in table.splitlines()[2:]]
    assert formats == list(get_args(OutputFormat))
    assert "`input`, `cached_input` and `output`" in doc
    assert set(Prices.model_fields) == {"input", "cached_input", "output"}


def test_readme_setup_is_a_valid_commands_file_and_the_pm2_line() -> None:
    block = _block_after((ROOT / "README.md").read_text(), "<!-- runner: setup -->")
    lines = block.splitlines()
    assert lines[0] == "cat > ~/agent-commands.yml <<'EOF'" and lines[-2] == "EOF"
    agents = parse(yaml.safe_load("\n".join(lines[1:-2])))
    assert agents["dev"].command == ("claude", "-p", "$TASK_INSTRUCTION")
    assert lines[-1] == "AGENT_COMMANDS_FILE=~/agent-commands.yml pm2 start ecosystem.config.js"


def test_readme_passes_the_remaining_budget_to_claude() -> None:
    """`--max-budget-usd "$TASK_BUDGET_REMAINING_USD"`: the task's budget, else the entry's."""
    block = _block_after((ROOT / "README.md").read_text(), "<!-- runner: setup -->")
    agents = parse(yaml.safe_load("\n".join(block.splitlines()[1:-2])))
    budgeted = [a for a in agents.values() if "--max-budget-usd" in a.command]
    assert [a.output for a in budgeted] == ["claude-json"]
    [agent] = budgeted
    at = agent.command.index("--max-budget-usd")
    assert agent.command[at + 1] == "$TASK_BUDGET_REMAINING_USD"
    for payload, budget in (({"budget_remaining_usd": 1.75}, "1.75"), ({}, "5")):
        env = agent_environment(
            {}, {"payload": payload}, Path("t"), Path("r"), Path("u"), agent.env
        )
        assert expand_command(agent.command, env)[at + 1] == budget
    assert {a.output for a in agents.values()} == {"text", "claude-json", "codex-jsonl"}


def test_agents_doc_names_the_fixed_variables() -> None:
    doc = (ROOT / "docs" / "AGENTS.md").read_text().split("## Run by the agent runner", 1)[1]
    table = doc.split("| Variable | Value |", 1)[1].split("\n\n", 1)[0]
    names = {
        n.strip("` ")
        for row in table.splitlines()[2:]
        for n in row.strip().split("|")[1].split(",")
    }
    fixed = set(agent_environment({}, {}, Path("t"), Path("r"), Path("u")))
    assert names - {"TASK_<KEY>"} == fixed


def test_operations_doc_holds_the_runner_models() -> None:
    """Each variable RunnerSettings reads has its row, and each row its variable; the commands
    file's example has every key an entry may have, and parses."""
    doc = (ROOT / "docs" / "OPERATIONS.md").read_text().split("## The agent runner", 1)[1]
    rows = first_column_names(doc, "### Settings")
    variables = {field.validation_alias for field in RunnerSettings.model_fields.values()}
    # how it reaches Temporal: the client settings, as complete_activity.py reads them
    assert rows - {"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE"} == variables
    example = doc.split("### The commands file", 1)[1].split("```yaml\n", 1)[1].split("```")[0]
    entries = yaml.safe_load(example)
    assert set(entries["dev"]) == set(AgentEntry.model_fields)
    assert parse(entries)["dev"].cwd == HOME / "src"
