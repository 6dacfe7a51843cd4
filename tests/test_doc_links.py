"""Every relative link in the repository's Markdown leads somewhere: to a tracked file or
directory and, with `#anchor`, to a heading of that document as GitHub names it. The test files
the documents name exist. External http(s) links are not followed."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from harness.env import ROOT
from tests.helpers.markdown import anchors, github_slug, links

pytestmark = pytest.mark.unit

TEST_FILE = re.compile(r"\b(tests/[\w/]+\.py|test_\w+\.py)\b")
LINE_ANCHOR = re.compile(r"L\d+(-L\d+)?")


def tracked_files() -> set[str]:
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return {path for path in listing.split("\0") if path}


def broken_links(root: Path, doc: str, tracked: set[str]) -> list[str]:
    """`doc:line: target: why` for each relative link of `doc` that leads nowhere."""
    broken = []
    for link in links((root / doc).read_text(encoding="utf-8")):
        parts = urlsplit(link.target)
        if parts.scheme or parts.netloc:  # http(s), mailto: not followed
            continue
        path, anchor = unquote(parts.path), unquote(parts.fragment)
        base = "" if path.startswith("/") else os.path.dirname(doc)
        target = os.path.normpath(os.path.join(base, path.lstrip("/"))) if path else doc
        why = None
        if target == ".." or target.startswith("../"):
            why = "outside the repository"
        elif target not in tracked and not any(p.startswith(f"{target}/") for p in tracked):
            why = "no such tracked file or directory"
        elif anchor and target.endswith(".md"):
            if anchor not in anchors((root / target).read_text(encoding="utf-8")):
                why = f"{target} has no heading with anchor #{anchor}"
        elif anchor and not LINE_ANCHOR.fullmatch(anchor):
            why = f"#{anchor} is no line of {target}"
        if why:
            broken.append(f"{doc}:{link.line}: {link.target}: {why}")
    return broken


def test_every_relative_link_resolves() -> None:
    tracked = tracked_files()
    docs = sorted(path for path in tracked if path.endswith(".md"))
    assert {"README.md", "docs/OPERATIONS.md", "bench/README.md"} <= set(docs)
    assert sum(len(links((ROOT / doc).read_text(encoding="utf-8"))) for doc in docs) >= 10
    assert [line for doc in docs for line in broken_links(ROOT, doc, tracked)] == []


def test_every_test_file_named_in_the_docs_exists() -> None:
    """CHANGELOG.md is history: it may name a test file that has since been split or renamed."""
    missing = []
    for doc in sorted(p for p in tracked_files() if p.endswith(".md") and p != "CHANGELOG.md"):
        for name in TEST_FILE.findall((ROOT / doc).read_text(encoding="utf-8")):
            path = ROOT / (name if name.startswith("tests/") else f"tests/{name}")
            if not path.exists():
                missing.append(f"{doc}: {name}")
    assert missing == []


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("The block gate: deciding in the task file", "the-block-gate-deciding-in-the-task-file"),
        ("A failed stage: hold, retry, skip, abort", "a-failed-stage-hold-retry-skip-abort"),
        ("`payload` keys and `AGENT_TASK_DIR`", "payload-keys-and-agent_task_dir"),
        ("Run [by the runner](docs/AGENTS.md) _now_", "run-by-the-runner-now"),
        ("P5a / P5b: approval (by file)", "p5a--p5b-approval-by-file"),
        ("0.3.0 — 2026-01-02", "030--2026-01-02"),
    ],
)
def test_slugs_are_githubs(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_a_broken_link_is_reported_and_code_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "A.md").write_text(
        "# Title\n\n## Same\n\n## Same\n\n"
        "[up](../README.md#intro) [self](#same-1) [gone](#same-2)\n"
        "[wrong dir](docs/A.md) [file](../tool.py#L3) [dir](../docs)\n"
        "```sh\n[in a fence](missing.md)\n```\n"
        "`[in a span](missing.md)` [site](https://example.com/x.md)\n"
    )
    (tmp_path / "README.md").write_text("# Intro\n\n```\n# Not a heading\n```\n")
    tracked = {"README.md", "docs/A.md", "tool.py"}
    assert broken_links(tmp_path, "docs/A.md", tracked) == [
        "docs/A.md:7: #same-2: docs/A.md has no heading with anchor #same-2",
        "docs/A.md:8: docs/A.md: no such tracked file or directory",
    ]
    assert broken_links(tmp_path, "README.md", tracked) == []
    assert anchors((tmp_path / "README.md").read_text()) == {"intro"}
