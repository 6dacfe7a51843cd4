"""SECURITY.md names the tests behind each defence: every name must be a test that exists."""

from __future__ import annotations

import ast
import re

import pytest

from harness.env import ROOT

pytestmark = pytest.mark.unit

NAMED = re.compile(r"`(test_\w+\.py)::(test_\w+)`")


def test_every_test_named_in_security_md_exists() -> None:
    named = NAMED.findall((ROOT / "SECURITY.md").read_text())
    assert len(named) >= 30
    missing = []
    for module, function in set(named):
        path = ROOT / "tests" / module
        tree = ast.parse(path.read_text()) if path.exists() else ast.Module([], [])
        defined = {
            n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        if function not in defined:
            missing.append(f"{module}::{function}")
    assert missing == []
