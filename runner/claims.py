"""The runner's state, kept in the task files themselves: claims, outcomes, and restarts.

A claim is a read-check-write of one file under an exclusive `flock` on the task directory, so
two runners on one directory never both see `submitted` and both take it; the write itself is
the task-file module's atomic one. What a runner claimed is recorded in the file (`runner.id`),
which is how a restarted runner finds its own `in-progress` tasks: no state lives elsewhere.
The worker's own status writes (superseded, cancelled) take no lock; they touch only
`submitted` files, and a lost race there is caught by the next heartbeat (exit 4 or 6).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activities import task_files
from activities.task_files import IN_PROGRESS, SUBMITTED
from exceptions import TaskFileError

RUNNER_KEY = "runner"  # top-level key: {id, pid, log_file, claimed_at}


@contextlib.contextmanager
def directory_lock(task_dir: Path) -> Iterator[None]:
    """Exclusive among every runner on this host for the duration of one read-check-write."""
    fd = os.open(task_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def hold_identity(task_dir: Path, runner_id: str) -> int:
    """Lock `.agent-runner-<id>.lock` for this process's lifetime and return its fd.

    Two live runners with one id would each take the other's `in-progress` tasks for their own
    at a restart; this makes the second refuse to start instead (TaskFileError).
    """
    name = re.sub(r"[^A-Za-z0-9._-]", "_", runner_id)
    path = task_dir / f".agent-runner-{name}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:
        raise TaskFileError(f"cannot create {path}: {err.strerror or err}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise TaskFileError(
            f"another agent runner with id {runner_id!r} is running on {task_dir}: "
            "give each runner its own AGENT_RUNNER_ID"
        ) from None
    return fd


def _rewrite(path: Path, change: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """Load, apply `change` (False: leave the file as it is), write atomically keeping the mode.
    The caller holds the directory lock."""
    task = task_files.load_task(path)
    if not change(task):
        return None
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = 0o600
    task_files.write_text_atomic(path, task_files.dump_yaml(task), mode)
    return task


def _append_history(task: dict[str, Any], status: str, note: str, actor: str) -> None:
    history = task.get("history")
    history = history if isinstance(history, list) else []
    task["status"] = status
    task["history"] = [*history, task_files.history_entry(status, note, actor)]


def claim(
    task_dir: Path, path: Path, runner_id: str, log_file: Path, note: str
) -> dict[str, Any] | None:
    """Move a `submitted` task to `in-progress` for this runner; None if it is no longer
    `submitted` (another runner, the worker or an operator got there first)."""

    def change(task: dict[str, Any]) -> bool:
        if task.get("status") != SUBMITTED:
            return False
        _append_history(task, IN_PROGRESS, note, runner_id)
        task[RUNNER_KEY] = {
            "id": runner_id,
            "pid": None,
            "log_file": str(log_file),
            "claimed_at": task_files.now_utc().isoformat(),
        }
        return True

    with directory_lock(task_dir):
        return _rewrite(path, change)


def owned_by(task: dict[str, Any], runner_id: str) -> bool:
    info = task.get(RUNNER_KEY)
    return isinstance(info, dict) and info.get("id") == runner_id


def record_process(task_dir: Path, path: Path, runner_id: str, pid: int, note: str) -> None:
    """The agent's pid (its process group), while the task is still this runner's; a re-run
    after a restart also says so in the history."""

    def change(task: dict[str, Any]) -> bool:
        if task.get("status") != IN_PROGRESS or not owned_by(task, runner_id):
            return False
        task[RUNNER_KEY] = {**task[RUNNER_KEY], "pid": pid}
        if note:
            _append_history(task, IN_PROGRESS, note, runner_id)
        return True

    with directory_lock(task_dir):
        _rewrite(path, change)


def finish(
    task_dir: Path, path: Path, runner_id: str, status: str, note: str, output: str | None = None
) -> None:
    """The task's final status, a history entry, and `result` filled in."""

    def change(task: dict[str, Any]) -> bool:
        _append_history(task, status, note, runner_id)
        task["result"] = {
            "output": output,
            "completed_by": runner_id,
            "completed_at": task_files.now_utc().isoformat(),
        }
        return True

    with directory_lock(task_dir):
        _rewrite(path, change)


def mark(task_dir: Path, path: Path, runner_id: str, status: str, note: str) -> None:
    """A status for a task this runner never ran (one it refuses), without touching `result`."""

    def change(task: dict[str, Any]) -> bool:
        if task.get("status") != SUBMITTED:
            return False
        _append_history(task, status, note, runner_id)
        return True

    with directory_lock(task_dir):
        _rewrite(path, change)


def own_in_progress(task_dir: Path, runner_id: str) -> list[tuple[Path, dict[str, Any]]]:
    """The tasks a previous run of this runner left `in-progress`, oldest first."""
    found = []
    for path in task_files.iter_task_files(task_dir, archive=False):
        with contextlib.suppress(TaskFileError):
            task = task_files.load_task(path)
            if task.get("status") == IN_PROGRESS and owned_by(task, runner_id):
                found.append((path, task))
    return sorted(found, key=lambda item: (str(item[1].get("created", "")), item[0].name))


@dataclass
class Scanner:
    """Finds `submitted` tasks for the configured agents, oldest `created` first.

    Each file is parsed again only when its size or mtime changed, and a malformed one is
    reported once per version through `report(path, problem)`, then left untouched.
    """

    agents: frozenset[str]
    report: Callable[[Path, str], None]
    _seen: dict[str, tuple[tuple[int, int, int], dict[str, Any] | None]] = field(
        default_factory=dict
    )

    def _parse(self, path: Path) -> dict[str, Any] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._seen.get(path.name)
        if cached is not None and cached[0] == key:
            return cached[1]
        task: dict[str, Any] | None = None
        try:
            task = task_files.load_task(path)
            if not isinstance(task.get("target_agent"), str) or "status" not in task:
                self.report(path, "it has no target_agent or status")
                task = None
        except TaskFileError as err:
            self.report(path, str(err))
        self._seen[path.name] = (key, task)
        return task

    def candidates(self, task_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
        found = []
        names = set()
        for path in task_files.iter_task_files(task_dir, archive=False):
            names.add(path.name)
            task = self._parse(path)
            if (
                task is not None
                and task.get("status") == SUBMITTED
                and task.get("target_agent") in self.agents
            ):
                found.append((path, task))
        for gone in set(self._seen) - names:
            del self._seen[gone]
        return sorted(found, key=lambda item: (str(item[1].get("created", "")), item[0].name))
