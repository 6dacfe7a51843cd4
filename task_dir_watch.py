"""The one watch of a task directory: watchfiles' `awatch`, restarted when it fails.

The gate's watcher (activities/gate_watcher.py) and the agent runner (runner/) both wake on
changes to task files through `watch_task_dir`. Events only hurry them: each has a slower scan
or check of its own, so a watch that fails (the directory removed, inotify's limits, a file
system without events: `WATCHFILES_FORCE_POLLING=1`) is said once and set up again meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from watchfiles import Change, awatch

# The watch thread looks for changes every STEP_MS and yields once a burst of writes has been
# quiet that long: about 0.1 s from a write to the callback.
STEP_MS = 50
RESTART_DELAY = 10.0

Wanted = Callable[[Change, str], bool]
OnChanges = Callable[[set[str]], Awaitable[None]]


async def watch_task_dir(
    directory: Path,
    wanted: Wanted,
    on_changes: OnChanges,
    stop: asyncio.Event,
    log: Any,
    *,
    failed_event: str,
    effect: str,
    recursive: bool = True,
    tick_ms: int | None = None,
    prepare: Callable[[], Awaitable[object]] | None = None,
    on_up: Callable[[], Awaitable[None]] | None = None,
    on_down: Callable[[], None] | None = None,
) -> None:
    """Call `on_changes(paths)` for each batch of `wanted` changes below `directory` until
    `stop`. With `tick_ms`, the watch also comes back every tick with no change, and `on_up` runs
    the first time it does (the watch is up); `on_down` runs when it fails. `prepare` runs
    before each (re)start of the watch, e.g. to create the directory again. A failure is logged
    as `failed_event` with `effect` once at warning level, then at debug while it lasts."""
    failing = False
    while not stop.is_set():
        up = False
        try:
            if prepare is not None:
                await prepare()
            async for changes in awatch(
                directory,
                watch_filter=wanted,
                step=STEP_MS,
                rust_timeout=tick_ms or 5000,
                yield_on_timeout=tick_ms is not None,
                stop_event=stop,
                recursive=recursive,
                ignore_permission_denied=True,
            ):
                if not up:
                    up, failing = True, False
                    if on_up is not None:
                        await on_up()
                if changes:
                    await on_changes({path for _, path in changes})
        except Exception as err:  # noqa: BLE001 - any failure: say so, the slower path covers
            if on_down is not None:
                on_down()
            (log.debug if failing else log.warning)(
                failed_event,
                dir=str(directory),
                error=str(err).splitlines()[0] if str(err) else type(err).__name__,
                effect=f"{effect}; watching again every {RESTART_DELAY:g} s",
            )
            failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RESTART_DELAY)
