"""`make demo` is the product path: examples/demo.py runs worker.py and agent_runner.py with a
shell-script agent against a server, and an operator approves the block through the CLI."""

from __future__ import annotations

import asyncio
import sys

import pytest

from harness.env import ROOT

pytestmark = pytest.mark.timeout(180)


async def test_make_demo_runs_a_pipeline_on_the_runner(address: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "examples.demo",
        "--address",
        address,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 150)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "stage: awaiting-approval" in text
    assert "blocked on: ['container runs privileged with host networking']" in text
    assert "result: complete" in text
    assert "outcome: partial" in text and "by: demo-operator" in text
    assert "Matrix #sysadmin: [ACTION] demo-build: block 1/1 needs review" in text
    for agent in ("claudebox", "dev", "security-agent"):
        assert f"({agent}) completed" in text
    assert text.count(") completed") == 5
