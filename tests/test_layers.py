"""The shape of the code, checked: layers import downwards, workflows compose instead of
inheriting, and no production module outgrows a sitting's read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = [
    p
    for p in sorted(ROOT.glob("**/*.py"))
    if not {"tests", "bench", "harness", "examples", ".venv", ".test-tools"}
    & set(p.relative_to(ROOT).parts)
]
MAX_LINES = 400


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_activities_never_import_workflows() -> None:
    for path in sorted((ROOT / "activities").glob("*.py")):
        assert not {n for n in imported(path) if n.split(".")[0] == "workflows"}, path.name


def test_no_workflow_class_inherits_a_project_class() -> None:
    for path in sorted((ROOT / "workflows").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b) for b in node.bases]
                assert set(bases) <= {"Exception"}, (path.name, node.name, bases)


def test_no_production_module_is_over_400_lines() -> None:
    assert PRODUCTION
    long = {
        str(p.relative_to(ROOT)): n
        for p in PRODUCTION
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
