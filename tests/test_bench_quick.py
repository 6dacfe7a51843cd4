"""`python -m bench.run --quick` runs end to end and reports every figure with a ratio.

No timing is asserted here: speed and memory targets are judged by `make bench`, not by tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.env import ROOT

FIGURES = ("P1", "P2", "P2i", "P3", "P3h", "P4", "P5a", "P5b", "P6", "P7")


@pytest.mark.slow
def test_quick_bench_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["meta"]["quick"] is True
    figures = result["figures"]
    assert sorted(figures) == sorted(FIGURES)
    for key, figure in figures.items():
        assert figure["worker"]["n"] >= 1, key
        assert figure["bare"]["n"] >= 1, key
        assert isinstance(figure["ratio"], float) and figure["ratio"] > 0, key
        assert figure["target"], key
