"""The block gate's watcher: a decision written into a task file reaches the parked run at once.

The worker watches its task directory with watchfiles (inotify through Rust `notify` on Linux;
`WATCHFILES_FORCE_POLLING=1` for a network file system that sends no events). When a task file
carrying a parked run's mark (`gate_files.gate_mark`, written by notify_blocks) turns `approved`
or `rejected`, the watcher sends that run the `approve` or `reject` update, with the history
entry's actor and note and `via: task-file`. Files are read in a thread, never in the loop.

An update, not a signal: the gate's validators answer the sender. A decision for a run that is
not at its gate, or a second one (several workers watching one directory all see the same
write), is refused and written nowhere; the watcher logs the refusal on one line and moves on.
A signal would be written into the history each time, and could only be ignored.

The mark lives in the file, so nothing needs remembering across restarts: when the watch is up,
the watcher reads every task file changed within the gate's 7 days once and delivers the
decisions it finds, so a file approved while no worker ran is seen at start. What the watcher
cannot see (a file without the mark, a change it missed) is left to the gate's fallback check,
and so is a decision written before the gate opened: refused here, it is read by the check that
runs as the gate opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import structlog
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode
from watchfiles import Change

from activities import gate_files, task_files
from exceptions import TaskFileError
from models import DecisionInput
from task_dir_watch import watch_task_dir

UPDATE_OF = {
    task_files.APPROVED: "approve",
    task_files.REJECTED: "reject",
    task_files.CHANGES_REQUESTED: "request_changes",
}
# The watch also returns every TICK_MS with nothing, which is how the watcher knows its watch is
# up before it reads the directory.
TICK_MS = 1000
# A file last written longer ago than the gate lasts (7 days) cannot hold a decision for a run
# still parked: the start-up read skips it.
RESCAN_AGE = timedelta(days=7, hours=1)
DELIVERY_TRIES = 5
DELIVERY_TIMEOUT = 60.0
CONCURRENT_DELIVERIES = 16
REMEMBERED = 10_000  # decisions delivered or refused, so a file's later edits send nothing

log = structlog.get_logger("gate_watcher")


@dataclass(frozen=True)
class FileDecision:
    workflow_id: str
    run_id: str
    decision: str
    by: str
    note: str
    file: str
    wait: int = 0  # which of the run's waits on this file it answers

    @property
    def key(self) -> tuple[str, str, str, int]:
        return self.workflow_id, self.run_id, self.decision, self.wait


def read_decision(path: Path) -> FileDecision | None:
    """The decision a task file holds for the run parked on it, else None. Blocking."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(task_files.MAX_TASK_FILE_BYTES + 1)
    except OSError:
        return None
    if not any(word.encode() in raw for word in task_files.DECISIONS):  # most writes: no parse
        return None
    try:
        task = task_files.load_task(path)
    except TaskFileError:
        return None  # half written, or not a task: its next write is read again
    mark, found = gate_files.gate_mark(task), gate_files.file_decision(task)
    if mark is None or found is None:
        return None
    return FileDecision(
        *mark,
        decision=found["decision"],
        by=found["by"],
        note=found["note"],
        file=path.name,
        wait=gate_files.gate_round(task),
    )


class GateWatcher:
    """Watches one task directory (and its archive) for decisions; `running()` runs it."""

    def __init__(self, client: Client, queue_dir: Path) -> None:
        self.client = client
        self.queue_dir = queue_dir
        root = os.path.abspath(queue_dir)
        self._dirs = {root, os.path.join(root, task_files.ARCHIVE)}
        self.active = False
        self._stop = asyncio.Event()
        self._remembered: dict[tuple[str, str, str, int], None] = {}
        self._pending: set[tuple[str, str, str, int]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(CONCURRENT_DELIVERIES)

    def covers(self, path: Path) -> bool:
        """True while the watch is up and `path` is in the watched directories."""
        return self.active and os.path.dirname(os.path.abspath(path)) in self._dirs

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[GateWatcher]:
        logging.getLogger("watchfiles").setLevel(logging.WARNING)  # one INFO line per change
        runner = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            self._stop.set()
            for task in [runner, *self._tasks]:
                task.cancel()
            await asyncio.gather(runner, *self._tasks, return_exceptions=True)
            self.active = False

    async def run(self) -> None:
        """Watch until stopped; while the watch is down the gate's fallback check covers."""
        await watch_task_dir(
            self.queue_dir,
            self._wanted,
            lambda paths: self._read({Path(p) for p in paths}),
            self._stop,
            log,
            failed_event="gate_watch_failed",
            effect="file decisions wait for the gate's fallback check",
            tick_ms=TICK_MS,
            prepare=lambda: asyncio.to_thread(task_files.ensure_private_dir, self.queue_dir),
            on_up=self._up,
            on_down=self._down,
        )
        self.active = False

    async def _up(self) -> None:
        self.active = True
        await self._read_all()

    def _down(self) -> None:
        self.active = False

    def _wanted(self, change: Change, path: str) -> bool:
        return (
            change != Change.deleted
            and path.endswith(".yml")
            and os.path.dirname(path) in self._dirs
        )

    async def _read_all(self) -> None:
        """Once the watch is up: every recently written task file, for decisions made while no
        worker watched. Changes from here on arrive as events (a file in both is sent once)."""

        def scan() -> tuple[int, list[FileDecision]]:
            cutoff = time.time() - RESCAN_AGE.total_seconds()
            recent = [p for p in task_files.iter_task_files(self.queue_dir) if _mtime(p) > cutoff]
            return len(recent), [d for d in map(read_decision, recent) if d is not None]

        read, found = await asyncio.to_thread(scan)
        log.info(
            "gate_watch_started",
            dir=str(self.queue_dir),
            files_read=read,
            decisions_found=len(found),
        )
        self._send_all(found)

    async def _read(self, paths: Iterable[Path]) -> None:
        def read() -> list[FileDecision]:
            return [d for d in map(read_decision, paths) if d is not None]

        self._send_all(await asyncio.to_thread(read))

    def _send_all(self, found: Iterable[FileDecision]) -> None:
        for decision in found:
            if decision.key in self._remembered or decision.key in self._pending:
                continue
            self._pending.add(decision.key)
            task = asyncio.create_task(self._deliver(decision))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, found: FileDecision) -> None:
        try:
            for attempt in range(1, DELIVERY_TRIES + 1):
                async with self._slots:
                    done = await self._send(found, attempt)
                if done:
                    self._remember(found.key)
                    return
                if attempt < DELIVERY_TRIES:
                    await asyncio.sleep(2.0**attempt)
            log.warning(
                "file_decision_undelivered",
                workflow_id=found.workflow_id,
                file=found.file,
                decision=found.decision,
                effect="the gate's fallback check reads the file",
            )
        finally:
            self._pending.discard(found.key)

    async def _send(self, found: FileDecision, attempt: int) -> bool:
        """One delivery; True when it is settled (delivered, or refused by the run)."""
        fields = {"workflow_id": found.workflow_id, "decision": found.decision, "file": found.file}
        handle = self.client.get_workflow_handle(found.workflow_id, run_id=found.run_id)
        given = DecisionInput(by=found.by[:200], note=found.note[:2000], via="task-file")
        try:
            await asyncio.wait_for(
                handle.execute_update(UPDATE_OF[found.decision], given), DELIVERY_TIMEOUT
            )
        except WorkflowUpdateFailedError as err:  # the gate is not open, or already decided
            log.info("file_decision_refused", reason=str(err.cause or err), **fields)
            return True
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:  # the run has ended
                log.info("file_decision_refused", reason=err.message, **fields)
                return True
            log.warning("file_decision_retry", error=err.message, attempt=attempt, **fields)
            return False
        except Exception as err:  # noqa: BLE001 - a timeout or a lost connection: try again
            log.warning(
                "file_decision_retry",
                error=str(err) or type(err).__name__,
                attempt=attempt,
                **fields,
            )
            return False
        log.info("file_decision_delivered", **fields)
        return True

    def _remember(self, key: tuple[str, str, str, int]) -> None:
        self._remembered[key] = None
        if len(self._remembered) > REMEMBERED:
            del self._remembered[next(iter(self._remembered))]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
