"""Small checks and waits the test modules share."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from activities import task_files
from harness.env import ROOT


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "the condition",
) -> None:
    """Poll `predicate` (a function or a coroutine function) until it is true; fails naming
    `what` after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


def task_files_in(queue_dir: Path) -> list[Path]:
    return list(task_files.iter_task_files(queue_dir, archive=False))


async def one_task_file(queue_dir: Path) -> Path:
    """Wait for a task file in the queue; fails unless it is the only one."""
    await wait_for(lambda: bool(task_files_in(queue_dir)), what=f"a task file in {queue_dir}")
    [path] = task_files_in(queue_dir)
    return path


def stderr_line(stderr: str) -> str:
    """The one line an error path may print: fails on none, several, or a traceback."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}: {stderr!r}"
    return lines[0]


async def failure_of(handle: WorkflowHandle[Any, Any], timeout: float = 60.0) -> ApplicationError:
    """The application error the workflow fails with; the test fails if it ends otherwise, or
    not within `timeout` seconds."""
    with pytest.raises(WorkflowFailureError) as caught:
        await asyncio.wait_for(handle.result(), timeout)
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError), cause
    return cause


def modules_imported_by(module: str) -> set[str]:
    """The modules that importing `module` loads, in a fresh interpreter in the repository
    (this process has long since imported everything)."""
    code = (
        f"import sys, json; before = set(sys.modules); import {module}; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))
