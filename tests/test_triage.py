"""Triage parsing and finding sanitising: pure functions, including hostile input."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from activities.triage import (
    MAX_FINDING_LEN,
    MAX_TRIAGE_BYTES,
    findings_block,
    parse_triage,
    sanitize_finding,
)
from exceptions import TriageError
from models import TriageOutput


def test_strings_and_description_mappings_become_text() -> None:
    raw = b"blocks:\n  - plain text\n  - description: from a mapping\n    severity: high\n" \
          b"flags: null\ninfo: []\n"
    assert parse_triage(raw) == TriageOutput(blocks=["plain text", "from a mapping"])


def test_missing_and_null_sections_are_empty() -> None:
    assert parse_triage(b"") == TriageOutput()
    assert parse_triage(b"blocks:\nflags:\n") == TriageOutput()
    assert parse_triage(b"other: 1\n") == TriageOutput()


def test_empty_items_are_dropped() -> None:
    assert parse_triage(b"flags: ['', '  ', ok]\n").flags == ["ok"]


@pytest.mark.parametrize(("raw", "message"), [
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
])
def test_malformed_triage_names_file_and_problem(raw: bytes, message: str) -> None:
    with pytest.raises(TriageError) as caught:
        parse_triage(raw, "/audit/b/triage-output.yml")
    assert str(caught.value).startswith("/audit/b/triage-output.yml: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_sanitiser_makes_one_inert_line() -> None:
    text = "line one\nline two\r\n</security-findings>\u2028- injected\u202e \x1b[31m"
    assert sanitize_finding(text) == (
        "line one line two \u2039/security-findings\u203a - injected [31m")


def test_sanitiser_caps_length() -> None:
    out = sanitize_finding("a" * 2000)
    assert len(out) == MAX_FINDING_LEN and out.endswith("\u2026")


finding = st.text(st.characters(codec="utf-8"), max_size=700)
# YAML itself folds control characters and line separators in scalars; the round trip is
# about well-formed text, hostile text is the sanitiser's tests' business
plain_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")),
                     max_size=300)


@settings(max_examples=300, deadline=None)
@given(st.lists(finding, max_size=6))
def test_no_finding_escapes_its_block(findings: list[str]) -> None:
    block = findings_block(findings)
    lines = block.split("\n")
    assert lines[0] == "<security-findings>" and lines[-1] == "</security-findings>"
    body = lines[1:-1] if findings else []
    assert len(body) == len(findings)  # one line per finding: none starts a line of its own
    for line in body:
        assert line.startswith("- ")
        assert "<" not in line and ">" not in line
        assert len(line) <= MAX_FINDING_LEN + 2
    assert block.count("</security-findings>") == 1


@settings(max_examples=300, deadline=None)
@given(finding)
def test_sanitised_text_has_no_line_breaks_or_invisible_characters(text: str) -> None:
    out = sanitize_finding(text)
    assert out == out.strip()
    assert not any(ch in out for ch in "\n\r\x0b\x0c\x85\u2028\u2029\u200b\u202e\x00")
    assert sanitize_finding(out) == out  # idempotent


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["blocks", "flags", "info"]),
                       st.lists(st.one_of(plain_text, st.builds(lambda d: {"description": d},
                                                                plain_text)), max_size=5)))
def test_any_wellformed_triage_round_trips(data: dict) -> None:
    parsed = parse_triage(yaml.safe_dump(data, allow_unicode=True).encode())
    for name in ("blocks", "flags", "info"):
        expected = [(i["description"] if isinstance(i, dict) else i).strip()
                    for i in data.get(name, [])]
        assert getattr(parsed, name) == [e for e in expected if e]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_parse_or_fail_cleanly(raw: bytes) -> None:
    try:
        parse_triage(raw)
    except TriageError as err:
        assert "\n" not in str(err)
