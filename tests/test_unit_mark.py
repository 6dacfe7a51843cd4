"""`make unit` stays a run without servers: a test marked unit that asks for a fixture starting
one, directly or through another fixture, errors before that server starts, naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.env import ROOT

pytestmark = pytest.mark.unit

MARKED = """
import pytest

pytestmark = pytest.mark.unit


def test_through_another_fixture(address: str) -> None:
    assert address


def test_directly(receiver: object) -> None:
    assert receiver


def test_without_one(tmp_path: object) -> None:
    assert tmp_path
"""


def test_a_unit_test_that_asks_for_a_server_errors_before_it_starts(tmp_path: Path) -> None:
    module = tmp_path / "test_marked.py"
    module.write_text(MARKED)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.conftest",  # the fixtures and the check, as for every test under tests/
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(ROOT),
            str(module),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "1 passed, 2 errors" in run.stdout, run.stdout + run.stderr
    assert "test_through_another_fixture is marked unit" in run.stdout
    assert "uses the server fixture(s) dev_env: drop the unit mark" in run.stdout
    assert "uses the server fixture(s) receiver: drop the unit mark" in run.stdout
