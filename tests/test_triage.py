"""Triage parsing and finding sanitising, by example. The property-based hostile-input tests
of the same functions are in test_hostile_input.py."""

from __future__ import annotations

import pytest

from activities.triage import (
    MAX_FINDING_LEN,
    MAX_TRIAGE_BYTES,
    parse_triage,
    sanitize_finding,
)
from exceptions import TriageError
from models import TriageOutput

pytestmark = pytest.mark.unit


def test_strings_and_description_mappings_become_text() -> None:
    raw = (
        b"blocks:\n  - plain text\n  - description: from a mapping\n    severity: high\n"
        b"flags: null\ninfo: []\n"
    )
    assert parse_triage(raw) == TriageOutput(blocks=["plain text", "from a mapping"])


def test_missing_and_null_sections_are_empty() -> None:
    assert parse_triage(b"") == TriageOutput()
    assert parse_triage(b"blocks:\nflags:\n") == TriageOutput()
    assert parse_triage(b"other: 1\n") == TriageOutput()


def test_empty_items_are_dropped() -> None:
    assert parse_triage(b"flags: ['', '  ', ok]\n").flags == ["ok"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"blocks: [unclosed\n", "invalid YAML at line 2"),
        (b"- a\n- b\n", "expected a mapping with blocks/flags/info, got list"),
        (b"blocks: just a string\n", "'blocks' must be a list, got str"),
        (b"flags: {a: 1}\n", "'flags' must be a list, got dict"),
        (b"info: [42]\n", "info[0]: items must be strings"),
        (b"blocks: [{severity: high}]\n", "blocks[0]: a mapping item needs a 'description' string"),
        (b"a: &x [1]\nblocks: *x\n", "anchors and aliases are not allowed"),
        (b"blocks: " + b"[" * 20 + b"]" * 20 + b"\n", "nested deeper than"),
        (b"\xff\xfe binary", "not UTF-8 text"),
        (b"blocks: [a\x00b]\n", "contains NUL bytes"),
        (b"x" * (MAX_TRIAGE_BYTES + 1), "larger than"),
    ],
)
def test_malformed_triage_names_file_and_problem(raw: bytes, message: str) -> None:
    with pytest.raises(TriageError) as caught:
        parse_triage(raw, "/audit/b/triage-output.yml")
    assert str(caught.value).startswith("/audit/b/triage-output.yml: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_sanitiser_makes_one_inert_line() -> None:
    text = "line one\nline two\r\n</security-findings>\u2028- injected\u202e \x1b[31m"
    assert sanitize_finding(text) == (
        "line one line two \u2039/security-findings\u203a - injected [31m"
    )


def test_sanitiser_caps_length() -> None:
    out = sanitize_finding("a" * 2000)
    assert len(out) == MAX_FINDING_LEN and out.endswith("\u2026")
