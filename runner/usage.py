"""What an agent's output says it used, read as its commands-file entry declares (`output`).

- `claude-json`: Claude Code's `--output-format json` (one result object) or `stream-json` (one
  object per line, the result object last). The last line that is an object with `type:
  result` counts: its `total_cost_usd`, `usage` and `num_turns` are the usage, its `result` the
  stage's text, and `is_error: true` fails the stage with its `subtype`.
- `codex-jsonl`: `codex exec --json`, one event per line. The `usage` of every
  `turn.completed` is summed as the lines come (Codex counts cached input inside
  `input_tokens`), priced with the entry's `prices`; the last `agent_message` item is the
  stage's text.
- `text`: nothing is read.

The readers are fed one line at a time and keep only what they need (one result object, running
sums), so a long run's output never sits in memory. Output that does not read as declared gives
a `problem` and no usage. Pure: no file, no clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from runner.config import CODEX_JSONL, Prices
from usage import Usage, UsageError, check_usage

CLAUDE_JSON = "claude-json"
PER_MILLION = 1_000_000
MAX_TEXT_CHARS = 10_000  # as much of the final text as a stage's output may hold


@dataclass(frozen=True)
class Report:
    """What the output said: the usage, the final text, an error result's subtype (the stage
    fails), and why the usage could not be read, if it could not (then there is none)."""

    usage: Usage | None = None
    text: str | None = None
    error: str | None = None
    problem: str | None = None


class OutputReader(Protocol):
    def feed(self, line: str) -> None: ...

    def report(self) -> Report: ...


def reader_for(output: str, prices: Prices | None) -> OutputReader | None:
    """The reader of an entry's `output`; None for `text`."""
    if output == CLAUDE_JSON:
        return ClaudeJson()
    if output == CODEX_JSONL:
        return CodexJsonl(prices)
    return None


def _object(line: str) -> dict[str, Any] | None:
    """The JSON object on `line`, or None: an agent's other lines (its stderr, a tool's noise)
    share the log."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _count(mapping: Any, key: str, where: str) -> int:
    """A token count of `mapping`, 0 when absent; a UsageError when it is not a count."""
    value = mapping.get(key, 0) if isinstance(mapping, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UsageError(f"{where}.{key} must be a whole number >= 0, not {value!r}")
    return value


class ClaudeJson:
    def __init__(self) -> None:
        self.result: dict[str, Any] | None = None

    def feed(self, line: str) -> None:
        if '"result"' not in line:  # most stream-json lines: no parse
            return
        found = _object(line)
        if found is not None and found.get("type") == "result":
            self.result = found

    def report(self) -> Report:
        if self.result is None:
            return Report(problem="no result object (`type: result`) in the output")
        return _claude_report(self.result)


def _claude_report(result: dict[str, Any]) -> Report:
    """An error result fails the stage even when its usage does not read: then only the usage
    is lost, with the problem said."""
    is_error = result.get("is_error")
    if not isinstance(is_error, bool):
        return Report(problem=f"result object: is_error must be true or false, not {is_error!r}")
    text = result.get("result")
    text = text[:MAX_TEXT_CHARS] if isinstance(text, str) else None
    subtype = result.get("subtype")
    error = (subtype if isinstance(subtype, str) and subtype else "error") if is_error else None
    try:
        usage = _claude_usage(result)
    except UsageError as err:
        return Report(None, text, error, f"result object: {err}")
    return Report(usage or None, text, error)


def _claude_usage(result: dict[str, Any]) -> Usage:
    """Without a `usage` object the token counts are unknown, not zero."""
    known: dict[str, Any] = {"cost_usd": result.get("total_cost_usd")}
    counts = result.get("usage")
    if counts is not None:
        if not isinstance(counts, dict):
            raise UsageError(f"usage must be an object, not {counts!r}")
        # Claude counts cache writes apart from `input_tokens`: input not read from a cache too
        known["input_tokens"] = _count(counts, "input_tokens", "usage") + _count(
            counts, "cache_creation_input_tokens", "usage"
        )
        known["output_tokens"] = _count(counts, "output_tokens", "usage")
        known["cache_read_tokens"] = _count(counts, "cache_read_input_tokens", "usage")
    known["turns"] = result.get("num_turns")
    return check_usage(known)


class CodexJsonl:
    def __init__(self, prices: Prices | None) -> None:
        self.prices = prices
        self.turns = 0
        self.input = self.cached = self.output = 0
        self.text: str | None = None
        self.problem: str | None = None

    def feed(self, line: str) -> None:
        if self.problem is not None or (
            '"turn.completed"' not in line and '"agent_message"' not in line
        ):
            return
        event = _object(line)
        if event is None:
            return
        if event.get("type") == "turn.completed":
            try:
                counts = event.get("usage")
                where = "turn.completed: usage"
                self.input += _count(counts, "input_tokens", where)
                self.cached += _count(counts, "cached_input_tokens", where)
                self.output += _count(counts, "output_tokens", where)
            except UsageError as err:
                self.problem = str(err)  # a sum without that turn would be too low: none
                return
            self.turns += 1
        elif event.get("type") == "item.completed":
            item = event.get("item")
            if isinstance(item, dict) and item.get("type") == "agent_message":
                text = item.get("text")
                self.text = text[:MAX_TEXT_CHARS] if isinstance(text, str) else self.text

    def report(self) -> Report:
        if self.problem is not None:
            return Report(problem=self.problem)
        if self.turns == 0:
            return Report(problem="no turn.completed event in the output")
        fresh = max(0, self.input - self.cached)
        usage = Usage(
            input_tokens=fresh,
            output_tokens=self.output,
            cache_read_tokens=self.cached,
            turns=self.turns,
        )
        if self.prices is not None:
            usage["cost_usd"] = price(self.prices, fresh, self.cached, self.output)
        return Report(usage, self.text)


def price(prices: Prices, fresh: int, cached: int, output: int) -> float:
    """US dollars for these tokens at `prices` (per million), to a millionth of a dollar."""
    cost = fresh * prices.input + cached * prices.cached_input + output * prices.output
    return round(cost / PER_MILLION, 6)
