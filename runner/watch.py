"""Wakes the runner when a task file appears or changes, through the task directory's one
watch (task_dir_watch.py, which the gate's watcher uses too), reduced to a wake-up.

Events only shorten the wait: the runner also rescans every RESCAN_SECONDS, so a missed event
or a watch that failed delays a task by at most that much.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from watchfiles import Change

from task_dir_watch import watch_task_dir

RESCAN_SECONDS = 5.0


def _task_file(change: Change, path: str) -> bool:
    return change != Change.deleted and path.endswith(".yml")


async def wake_on_changes(
    directory: Path, wake: asyncio.Event, stop: asyncio.Event, log: Any
) -> None:
    """Set `wake` after each batch of changes to `*.yml` in `directory` (not below it), until
    `stop`."""

    async def woken(_: set[str]) -> None:
        wake.set()

    await watch_task_dir(
        directory,
        _task_file,
        woken,
        stop,
        log,
        failed_event="task_dir_watch_failed",
        effect=f"new tasks are found by a rescan every {RESCAN_SECONDS:g} s",
        recursive=False,
    )
