"""Wakes the runner when a task file appears or changes: watchfiles' `awatch`, used as the
gate's watcher (activities/gate_watcher.py) uses it, reduced to a wake-up.

Events only shorten the wait: the runner also rescans every RESCAN_SECONDS, so a missed event,
a watch that failed, or a file system without inotify (`WATCHFILES_FORCE_POLLING=1`) delays a
task by at most that much.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from watchfiles import Change, awatch

RESCAN_SECONDS = 5.0
STEP_MS = 50  # a burst of writes that has been quiet this long wakes the runner
RESTART_DELAY = 10.0


def _task_file(change: Change, path: str) -> bool:
    return change != Change.deleted and path.endswith(".yml")


async def wake_on_changes(
    directory: Path, wake: asyncio.Event, stop: asyncio.Event, log: Any
) -> None:
    """Set `wake` after each batch of changes to `*.yml` in `directory` (not below it), until
    `stop`. A watch that fails is said once and set up again after RESTART_DELAY."""
    while not stop.is_set():
        try:
            async for _ in awatch(
                directory,
                watch_filter=_task_file,
                stop_event=stop,
                recursive=False,
                step=STEP_MS,
                ignore_permission_denied=True,
            ):
                wake.set()
        except Exception as err:  # noqa: BLE001 - the rescans carry on without the watcher
            log.warning(
                "task_dir_watch_failed",
                task_dir=str(directory),
                error=str(err).splitlines()[0] if str(err) else type(err).__name__,
                effect=f"new tasks are found by a rescan every {RESCAN_SECONDS:g} s",
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RESTART_DELAY)
