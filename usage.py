"""What an agent's work cost: the usage object a stage's completion may carry.

One JSON object with any of `cost_usd` (US dollars), `input_tokens` (input not read from a
cache), `output_tokens`, `cache_read_tokens` (input read from a cache) and `turns`. An agent
writes it to TASK_USAGE_FILE under the agent runner, passes it to `complete_activity.py
--usage`, or the runner reads it from the agent's output (runner/usage.py). A key left out, or
null, is unknown: a completion without usage is of unknown cost, never of zero cost.

Standard library only: complete_activity.py checks `--usage` with `check_usage` on every
completion, and workflow code may import it as it is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TypedDict, cast

MAX_USAGE_BYTES = 4096  # five numbers need far less; a bigger object is not a usage
COST = "cost_usd"
COUNTS = ("input_tokens", "output_tokens", "cache_read_tokens", "turns")
KEYS = (COST, *COUNTS)


class Usage(TypedDict, total=False):
    """A usage object as it travels: only the keys whose value is known."""

    cost_usd: float
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    turns: int


class UsageError(ValueError):
    """Why a usage object is refused: one line, naming the key at fault."""


def check_usage(value: object) -> Usage:
    """`value` (parsed JSON) as a Usage: a mapping of known keys to numbers >= 0, whole numbers
    for the counts; null values are dropped. Anything else is a UsageError."""
    if not isinstance(value, Mapping):
        raise UsageError(f"must be a JSON object with any of {', '.join(KEYS)}")
    usage: dict[str, int | float] = {}
    for key, number in value.items():
        if key not in KEYS:
            raise UsageError(f"unknown key {key!r} (known: {', '.join(KEYS)})")
        if number is None:
            continue
        if key == COST:
            ok = isinstance(number, int | float) and not isinstance(number, bool)
            if not ok or not math.isfinite(number) or number < 0:
                raise UsageError(f"{key} must be a number >= 0, not {number!r}")
            usage[key] = float(number)
        else:
            if not isinstance(number, int) or isinstance(number, bool) or number < 0:
                raise UsageError(f"{key} must be a whole number >= 0, not {number!r}")
            usage[key] = number
    return cast(Usage, usage)


def _no_constant(name: str) -> object:
    raise UsageError(f"{name} is not a number")


def parse_usage(text: str) -> Usage:
    """A usage object from its JSON text (at most MAX_USAGE_BYTES); a UsageError saying why
    not. NaN and Infinity, which Python's json reads by default, are refused."""
    if len(text.encode("utf-8", errors="replace")) > MAX_USAGE_BYTES:
        raise UsageError(f"larger than {MAX_USAGE_BYTES} bytes")
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise UsageError(f"not JSON: {err.msg} (character {err.pos})") from None
    return check_usage(value)
