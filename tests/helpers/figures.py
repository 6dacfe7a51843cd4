"""The figures the reliability suite measures, printed as one table at the end of the run.

Tests take the session fixture `figures` and `record()` what they measured; the table is written
by `pytest_terminal_summary` through pytest's terminal reporter, so it appears with or without
`-s` and `-q`. tests/conftest.py imports both names, which registers them for every test module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest


@dataclass
class Figure:
    area: str
    what: str
    value: str


@dataclass
class Figures:
    """What the suite measured, in the order it was measured."""

    rows: list[Figure] = field(default_factory=list)

    def record(self, area: str, what: str, value: Any) -> None:
        if isinstance(value, float):
            value = f"{value:.2f}"
        self.rows.append(Figure(area, what, str(value)))


_FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Figures:
    return _FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    rows = _FIGURES.rows
    if not rows:
        return
    width_area = max(len(r.area) for r in rows)
    width_what = max(len(r.what) for r in rows)
    terminalreporter.write_sep("=", "reliability and security figures")
    for r in rows:
        terminalreporter.write_line(f"{r.area:<{width_area}}  {r.what:<{width_what}}  {r.value}")
