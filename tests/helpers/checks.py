"""Small checks and waits the test modules share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from activities import task_files


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


def stderr_line(stderr: str) -> str:
    """The one line an error path may print: fails on none, several, or a traceback."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}: {stderr!r}"
    return lines[0]
