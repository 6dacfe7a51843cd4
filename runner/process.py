"""One agent process: started in a process group of its own, its output in a 0600 log file.

The agent writes straight into its log file, so its output never passes through the runner's
memory or log, and `tail` reads the last lines back for heartbeats and the stage's result.
Linux only: the agent gets PR_SET_PDEATHSIG, so a runner killed -9 takes its agents' leaders
with it, and a restarted runner stops what is left of the group (`stop_leftovers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from activities.task_files import ensure_private_dir

PR_SET_PDEATHSIG = 1
TAIL_BYTES = 16 * 1024
MAX_LINE_BYTES = 1024 * 1024  # a longer output line is skipped, never held whole
RUNNER_NOTE = "[agent-runner]"


# Looked up once here: between fork and exec (where threads may hold locks) the child only
# makes the call.
_PRCTL = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGKILL it when the runner dies."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def open_log(path: Path) -> int:
    """Append-only and 0600 whatever the umask; the directory is created 0700."""
    ensure_private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return fd


async def spawn(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path | None, log_file: Path
) -> asyncio.subprocess.Process:
    """Start the agent without a shell. OSError (no such command, not executable, no such
    cwd) reaches the caller, which fails the task with its one line."""
    fd = open_log(log_file)
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    finally:
        os.close(fd)


def note_in_log(log_file: Path, line: str) -> None:
    """A line of the runner's own in the agent's log (start, re-run, stop)."""
    fd = open_log(log_file)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode())
    finally:
        os.close(fd)


def tail(log_file: Path, lines: int) -> list[str]:
    """The last `lines` non-blank lines of the log (from its last 16 KiB)."""
    try:
        with log_file.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - TAIL_BYTES))
            data = fh.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    kept = [line for line in kept if not line.startswith(RUNNER_NOTE)]
    return kept[-lines:]


def log_size(log_file: Path) -> int:
    """Where this run's output starts: a re-run appends to the log of the run before."""
    try:
        return log_file.stat().st_size
    except OSError:
        return 0


def output_lines(log_file: Path, offset: int) -> Iterator[str]:
    """The log's lines from `offset` on, one at a time, without the runner's own notes; a line
    longer than MAX_LINE_BYTES is skipped, so memory stays bounded whatever the agent wrote."""
    try:
        fh = log_file.open("rb")
    except OSError:
        return
    with fh:
        fh.seek(offset)
        while line := fh.readline(MAX_LINE_BYTES + 1):
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                while (rest := fh.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                    pass
                continue
            text = line.decode("utf-8", errors="replace")
            if not text.startswith(RUNNER_NOTE):
                yield text


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def stop_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM to the agent's whole group, SIGKILL after `grace` seconds if the leader stays."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        pass
    _signal_group(proc.pid, signal.SIGKILL)
    await proc.wait()


def reap_group(pgid: int) -> None:
    """Whatever the agent left running in its group once its leader is gone."""
    _signal_group(pgid, signal.SIGKILL)


def _members(pgid: int, task_files: tuple[Path, ...]) -> list[int]:
    """Live processes of group `pgid` that were started for one of `task_files` (TASK_FILE in
    their environment): a pgid whose group has emptied may be reused, so the group id alone is
    not proof that what is there is this task's agent."""
    markers = {f"TASK_FILE={task_file}".encode() for task_file in task_files}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != pgid:
                continue
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if markers.intersection(environ):
            found.append(int(entry))
    return found


def stop_leftovers(pgid: int, *task_files: Path) -> int:
    """SIGKILL what is left of an earlier run's agent group; returns how many were found."""
    members = _members(pgid, task_files)
    for pid in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(members)
