"""CHANGELOG.md keeps one section per heading in each release and each entry once: merged
branches tend to add a second `### Added`, or the same entry under two releases."""

from __future__ import annotations

from collections import Counter

import pytest

from harness.env import ROOT

pytestmark = pytest.mark.unit

CHANGELOG = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


def test_each_release_has_each_heading_once() -> None:
    headings: Counter[tuple[str, str]] = Counter()
    release = ""
    for line in CHANGELOG.splitlines():
        if line.startswith("## "):
            release = line
        elif line.startswith("### "):
            headings[(release, line)] += 1
    assert len(headings) >= 5  # the reading is real
    assert [heading for heading, count in headings.items() if count > 1] == []


def entries() -> list[str]:
    """Each top-level entry: its `- ` line and the indented lines that continue it."""
    found: list[list[str]] = []
    inside = False
    for line in CHANGELOG.splitlines():
        if line.startswith("- "):
            found.append([line])
            inside = True
        elif inside and line.startswith("  "):
            found[-1].append(line)
        else:
            inside = False
    return [" ".join(" ".join(lines).split()) for lines in found]


def test_each_entry_appears_once() -> None:
    entries_seen = Counter(entries())
    assert len(entries_seen) >= 50  # the reading is real
    assert [entry[:80] for entry, count in entries_seen.items() if count > 1] == []
