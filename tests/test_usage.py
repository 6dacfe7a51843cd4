"""The usage object and the readers of agent output, as pure functions: what `--usage` and
TASK_USAGE_FILE accept, what claude-json and codex-jsonl output says an agent used, and what
tokens cost at an entry's prices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.env import ROOT
from runner.config import Prices
from runner.process import MAX_LINE_BYTES, output_lines
from runner.usage import ClaudeJson, CodexJsonl, Report, price, reader_for
from tests.helpers.fake_agents import claude_result, claude_stream, codex_events
from usage import KEYS, MAX_USAGE_BYTES, UsageError, check_usage, parse_usage

pytestmark = pytest.mark.unit

PRICES = Prices(input=1.25, cached_input=0.125, output=10.0)


def test_a_usage_object_keeps_what_is_known() -> None:
    text = '{"cost_usd": 0.42, "input_tokens": 1200, "output_tokens": 800}'
    assert parse_usage(text) == {"cost_usd": 0.42, "input_tokens": 1200, "output_tokens": 800}
    everything = parse_usage(
        '{"cost_usd": 1, "input_tokens": 0, "output_tokens": 2, "cache_read_tokens": 3, "turns": 4}'
    )
    assert everything == {
        "cost_usd": 1.0,
        "input_tokens": 0,
        "output_tokens": 2,
        "cache_read_tokens": 3,
        "turns": 4,
    }
    assert isinstance(everything["cost_usd"], float)
    # null is unknown, as a key left out: nothing known is no usage at all
    assert parse_usage('{"cost_usd": null, "turns": 2}') == {"turns": 2}
    assert parse_usage("{}") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not JSON: Expecting value (character 0)"),
        ("{'cost_usd': 1}", "not JSON: Expecting property name enclosed in double quotes"),
        ("[1]", "must be a JSON object with any of cost_usd, input_tokens, output_tokens, "),
        ('"0.42"', "must be a JSON object with any of "),
        ('{"cost": 0.42}', "unknown key 'cost' (known: cost_usd, input_tokens, output_tokens, "),
        ('{"cost_usd": -0.01}', "cost_usd must be a number >= 0, not -0.01"),
        ('{"cost_usd": "0.42"}', "cost_usd must be a number >= 0, not '0.42'"),
        ('{"cost_usd": true}', "cost_usd must be a number >= 0, not True"),
        ('{"cost_usd": NaN}', "NaN is not a number"),
        ('{"cost_usd": Infinity}', "Infinity is not a number"),
        ('{"cost_usd": 1e999}', "cost_usd must be a number >= 0, not inf"),
        ('{"input_tokens": 1.5}', "input_tokens must be a whole number >= 0, not 1.5"),
        ('{"turns": -1}', "turns must be a whole number >= 0, not -1"),
        ('{"output_tokens": false}', "output_tokens must be a whole number >= 0, not False"),
        ('{"turns": 1}' + " " * 4096, "larger than 4096 bytes"),
    ],
)
def test_a_malformed_usage_is_one_line_saying_why(text: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_usage(text)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_check_usage_takes_parsed_json() -> None:
    assert check_usage({"turns": 3}) == {"turns": 3}
    with pytest.raises(UsageError):
        check_usage(None)


def read(reader: Any, lines: list[str]) -> Report:
    for line in lines:
        reader.feed(line + "\n")
    report: Report = reader.report()
    return report


CLAUDE_USAGE: Any = {
    "cost_usd": 0.0421,
    "input_tokens": 1500,  # 1200 + 300 written to the cache: input not read from one
    "output_tokens": 800,
    "cache_read_tokens": 5000,
    "turns": 4,
}


def test_claude_json_one_result_object() -> None:
    report = read(ClaudeJson(), ["starting", json.dumps(claude_result())])
    assert report == Report(CLAUDE_USAGE, "The build is complete and verified.")


def test_claude_stream_json_counts_its_last_result_object() -> None:
    earlier = claude_result(total_cost_usd=9.0, result="an earlier session")
    lines = [*claude_stream(earlier), "a line on stderr", *claude_stream(claude_result())]
    assert read(ClaudeJson(), lines) == Report(CLAUDE_USAGE, "The build is complete and verified.")


def test_claude_error_results_carry_their_subtype_and_usage() -> None:
    max_turns = claude_result(subtype="error_max_turns", is_error=True, num_turns=10)
    del max_turns["result"]
    report = read(ClaudeJson(), claude_stream(max_turns))
    assert (report.error, report.text, report.problem) == ("error_max_turns", None, None)
    assert report.usage == {**CLAUDE_USAGE, "turns": 10}
    budget = claude_result(subtype="error_max_budget_usd", is_error=True)
    assert read(ClaudeJson(), [json.dumps(budget)]).error == "error_max_budget_usd"
    # its usage unreadable: the error still fails the stage, without usage
    broken = claude_result(subtype="error_during_execution", is_error=True, total_cost_usd="x")
    report = read(ClaudeJson(), [json.dumps(broken)])
    assert (report.usage, report.error) == (None, "error_during_execution")
    assert report.problem == "result object: cost_usd must be a number >= 0, not 'x'"


def test_claude_without_usage_knows_only_its_cost_and_turns() -> None:
    result = claude_result()
    del result["usage"]
    assert read(ClaudeJson(), [json.dumps(result)]).usage == {"cost_usd": 0.0421, "turns": 4}


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ([], "no result object (`type: result`) in the output"),
        (["Done: it worked."], "no result object (`type: result`) in the output"),
        (['{"type": "result", "result": "cut sh'], "no result object (`type: result`) in the"),
        (['{"type": "assistant", "result": "x"}'], "no result object (`type: result`) in the"),
        (
            [json.dumps(claude_result(is_error="no"))],
            "result object: is_error must be true or false, not 'no'",
        ),
        (
            [json.dumps(claude_result(usage={"input_tokens": -5}))],
            "result object: usage.input_tokens must be a whole number >= 0, not -5",
        ),
        (
            [json.dumps(claude_result(usage=[1]))],
            "result object: usage must be an object, not [1]",
        ),
        (
            [json.dumps(claude_result(num_turns=2.5))],
            "result object: turns must be a whole number >= 0, not 2.5",
        ),
    ],
)
def test_claude_output_that_does_not_read(lines: list[str], problem: str) -> None:
    report = read(ClaudeJson(), lines)
    assert report.problem is not None and report.problem.startswith(problem)
    assert (report.usage, report.error) == (None, None)


def test_codex_sums_its_turns_at_the_entrys_prices() -> None:
    lines = codex_events([(24763, 24448, 122), (30000, 1000, 2500)], "Phase 1 is done.")
    report = read(CodexJsonl(PRICES), ["codex starting", *lines])
    # Codex's input_tokens hold its cached ones: 54763 in all, 25448 of them cached
    fresh, cached, output = 54763 - 25448, 25448, 2622
    assert report == Report(
        {
            "input_tokens": fresh,
            "output_tokens": output,
            "cache_read_tokens": cached,
            "turns": 2,
            "cost_usd": round((fresh * 1.25 + cached * 0.125 + output * 10.0) / 1e6, 6),
        },
        "Phase 1 is done.",
    )
    assert report.usage is not None and report.usage["cost_usd"] == 0.066045


def test_codex_without_prices_counts_tokens_of_unknown_cost() -> None:
    report = read(CodexJsonl(None), codex_events([(100, 40, 10)], "ok"))
    assert report.usage == {
        "input_tokens": 60,
        "output_tokens": 10,
        "cache_read_tokens": 40,
        "turns": 1,
    }


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ([], "no turn.completed event in the output"),
        (
            ['{"type": "turn.failed", "error": {"message": "x"}}'],
            "no turn.completed event in the output",
        ),
        (
            ['{"type": "turn.completed", "usage": {"input_tokens": "many"}}'],
            "turn.completed: usage.input_tokens must be a whole number >= 0, not 'many'",
        ),
        (
            [*codex_events([(1, 0, 1)], "x"), '{"type": "turn.completed"}'],
            "turn.completed: usage.input_tokens must be a whole number >= 0, not None",
        ),
    ],
)
def test_codex_output_that_does_not_read(lines: list[str], problem: str) -> None:
    report = read(CodexJsonl(PRICES), lines)
    assert (report.usage, report.problem) == (None, problem)


def test_price_per_million_tokens() -> None:
    assert price(PRICES, 1_000_000, 0, 0) == 1.25
    assert price(PRICES, 0, 2_000_000, 100_000) == 0.25 + 1.0
    assert price(PRICES, 1, 1, 1) == 0.000011  # to a millionth of a dollar
    assert price(Prices(input=0, cached_input=0, output=0), 10**9, 0, 10**9) == 0.0


def test_text_output_has_no_reader() -> None:
    assert reader_for("text", None) is None
    assert isinstance(reader_for("claude-json", None), ClaudeJson)
    assert isinstance(reader_for("codex-jsonl", PRICES), CodexJsonl)


def test_output_lines_from_this_run_on(tmp_path: Path) -> None:
    """A re-run's log holds the run before it; lines over MAX_LINE_BYTES and the runner's own
    notes are left out."""
    log = tmp_path / "t.log"
    log.write_bytes(b'[agent-runner] starting: claude\n{"earlier": 1}\n')
    offset = log.stat().st_size
    with log.open("ab") as fh:
        fh.write(b"[agent-runner] re-run: claude\nfirst\n")
        fh.write(b"x" * (MAX_LINE_BYTES * 2 + 10) + b"\n")
        fh.write(b"last \xe2\x9c\x93\xff\n")
        fh.write(b"no newline at the end")
    assert list(output_lines(log, offset)) == [
        "first\n",
        "last \u2713\ufffd\n",
        "no newline at the end",
    ]
    assert list(output_lines(tmp_path / "missing.log", 0)) == []


def test_agents_doc_lists_the_usage_keys() -> None:
    doc = (ROOT / "docs" / "AGENTS.md").read_text(encoding="utf-8")
    section = doc.split("## What the work cost", 1)[1]
    table = section.split("| Key | Value |", 1)[1].split("\n\n", 1)[0]
    assert [row.split("|")[1].strip(" `") for row in table.splitlines()[2:]] == list(KEYS)
    assert f"more than {MAX_USAGE_BYTES} bytes makes it malformed" in " ".join(section.split())
