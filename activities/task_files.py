"""The file-system task queue: the one module that reads and writes task files.

A task file is how a stage reaches an agent: YAML holding the stage's Temporal task token. The
layout, key set and fixed values are the original's (docs/DESIGN.md) so its dispatcher and agents
keep working. Every write here is atomic (temp file created 0600, fsync, rename, fsync of the
directory) and every directory holding tokens is created 0700.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shlex
import stat
import sys
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from exceptions import TaskFileError

SOURCE_AGENT = "temporal-worker"
ACTOR = "temporal-worker"
SUBMITTED = "submitted"
INPUT_REQUIRED = "input-required"
APPROVED = "approved"
REJECTED = "rejected"  # an operator may also reject in the file
CHANGES_REQUESTED = "changes-requested"  # ... or ask for fixes and another audit
DECISIONS = (APPROVED, REJECTED, CHANGES_REQUESTED)
SUPERSEDED = "superseded"
CANCELLED = "cancelled"
# Set by a dispatcher such as the agent runner (runner/claims.py); the worker never writes them.
IN_PROGRESS = "in-progress"
COMPLETED = "completed"
FAILED = "failed"
ARCHIVE = "archive"
MAX_TASK_FILE_BYTES = 1024 * 1024

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def now_utc() -> datetime:
    return datetime.now(UTC)


def encode_token(task_token: bytes) -> str:
    """Standard base64, as agents pass it to complete_activity.py."""
    return base64.b64encode(task_token).decode("ascii")


def dump_yaml(data: Mapping[str, Any]) -> str:
    """Block style, unicode kept, keys sorted: byte-for-byte the original's style."""
    return str(
        yaml.dump(
            dict(data), Dumper=_Dumper, default_flow_style=False, allow_unicode=True, sort_keys=True
        )
    )


def build_task(
    *,
    task_id: str,
    created: datetime,
    target_agent: str,
    task_type: str,
    summary: str,
    payload: Mapping[str, Any],
    task_token: str,
    history_note: str | None = None,
) -> dict[str, Any]:
    """The task mapping agents read; `task_token` is merged into the payload last so it wins."""
    stamp = created.isoformat()
    return {
        "id": task_id,
        "created": stamp,
        "source_agent": SOURCE_AGENT,
        "target_agent": target_agent,
        "task_type": task_type,
        "risk_level": "low",
        "requires_approval": False,
        "status": SUBMITTED,
        "summary": summary,
        "ttl_days": 7,
        "payload": {**payload, "task_token": task_token},
        "result": {"output": None, "completed_by": None, "completed_at": None},
        "history": [
            {
                "timestamp": stamp,
                "status": SUBMITTED,
                "actor": ACTOR,
                "note": summary if history_note is None else history_note,
            }
        ],
    }


def inside(root: Path, path: Path) -> Path:
    """`path`, after checking that it resolves inside `root`.

    Build names and workflow ids are chosen by whoever starts a pipeline; no file the worker
    writes for one may land outside its directory, whatever the name holds.
    """
    if not path.resolve().is_relative_to(root.resolve()):
        raise TaskFileError(f"refusing to write outside {root}: {path}")
    return path


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) 0700; an existing directory is left as the operator made it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise TaskFileError(f"cannot create directory {path}: {err.strerror or err}") from None
    return path


def write_text_atomic(path: Path, text: str, mode: int = 0o600) -> Path:
    """Write `text` so that readers see the old file or the whole new one, never a part.

    The temp file is `<name>.tmp`, invisible to consumers that match `*.yml`.
    """
    tmp = path.with_name(path.name + ".tmp")
    data = text.encode("utf-8")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)  # O_CREAT's mode is masked by umask; an old tmp keeps its mode
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise TaskFileError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def task_filename(now: datetime, task_id: str) -> str:
    return f"{now.strftime('%Y%m%d-%H%M%S')}-{task_id[:8]}.yml"


def write_task(queue_dir: Path, task: Mapping[str, Any], now: datetime | None = None) -> Path:
    """Write a new task file into the queue; returns its path."""
    ensure_private_dir(queue_dir)
    path = queue_dir / task_filename(now or now_utc(), str(task["id"]))
    return write_text_atomic(path, dump_yaml(task), 0o600)


def read_yaml(path: Path, limit: int, name: str = "") -> Any:
    """The YAML document in `path` (at most `limit` bytes, parsed by the safe loader).

    Every way it cannot be had is one TaskFileError line that starts with `name` (default: the
    path), so a task file and a settings file are refused in the same words.
    """
    name = name or str(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(limit + 1)
    except OSError as err:
        raise TaskFileError(f"{name} cannot be read: {err.strerror or err}") from None
    if len(raw) > limit:
        raise TaskFileError(f"{name} is larger than {limit} bytes")
    try:
        return yaml.load(raw, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as err:
        raise TaskFileError(f"{name} is not valid YAML: {_first_line(err)}") from None


def load_task(path: Path) -> dict[str, Any]:
    """Parse one task file; anything but a mapping is a TaskFileError."""
    data = read_yaml(path, MAX_TASK_FILE_BYTES)
    if not isinstance(data, dict):
        raise TaskFileError(f"{path} is not a YAML mapping")
    return data


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def iter_task_files(queue_dir: Path, *, archive: bool = True) -> Iterator[Path]:
    for directory in (queue_dir, queue_dir / ARCHIVE) if archive else (queue_dir,):
        with contextlib.suppress(OSError):
            yield from sorted(directory.glob("*.yml"))


def find_task(queue_dir: Path, task_id: str) -> Path | None:
    """Find a task file by its `id` in the queue, then its archive.

    Files named after the id (`*-<id[:8]>.yml`) are tried first, found by name alone; only when
    none of them holds the id are the other files read. Unreadable files are skipped. (Listing,
    sorting and comparing every path first cost the block notification O(queue size) in Python:
    13% of the worker's time with 200 pipelines in flight, bench P3.)
    """
    suffix = f"-{task_id[:8]}.yml"
    named = _named(queue_dir, suffix)
    for path in named:
        if _has_id(path, task_id):
            return path
    for path in iter_task_files(queue_dir):
        if not path.name.endswith(suffix) and _has_id(path, task_id):
            return path
    return None


def _named(queue_dir: Path, suffix: str) -> list[Path]:
    """`*<suffix>` files of the queue, then of its archive, each sorted by name."""
    found: list[Path] = []
    for directory in (queue_dir, queue_dir / ARCHIVE):
        with contextlib.suppress(OSError), os.scandir(directory) as entries:
            found += sorted(Path(e.path) for e in entries if e.name.endswith(suffix))
    return found


def _has_id(path: Path, task_id: str) -> bool:
    try:
        return str(load_task(path).get("id")) == task_id
    except TaskFileError:
        return False


def history_entry(status: str, note: str, actor: str = ACTOR, **extra: str) -> dict[str, str]:
    return {
        "timestamp": now_utc().isoformat(),
        "status": status,
        "actor": actor,
        "note": note,
        **extra,
    }


def update_task_status(path: Path, status: str, note: str, **extra: str) -> dict[str, Any]:
    """Set `status` and append a history entry (with `extra` keys), keeping every other key and
    the file's mode.

    Idempotent: when the file already has this status with this note (and these extra values)
    last, nothing is written, so a retried activity does not add a second entry.
    """
    task = load_task(path)
    history = task.get("history")
    if not isinstance(history, list):
        history = []
    last = history[-1] if history else None
    if (
        task.get("status") == status
        and isinstance(last, dict)
        and last.get("status") == status
        and last.get("note") == note
        and all(last.get(k) == v for k, v in extra.items())
    ):
        return task
    task["status"] = status
    task["history"] = [*history, history_entry(status, note, **extra)]
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = 0o600
    write_text_atomic(path, dump_yaml(task), mode)
    return task


def last_entry(task: Mapping[str, Any], status: str) -> dict[str, Any]:
    """The latest history entry with `status` ({} when there is none)."""
    history = task.get("history")
    if isinstance(history, list):
        for entry in reversed(history):
            if isinstance(entry, dict) and entry.get("status") == status:
                return entry
    return {}


# --- The block gate's mark on the originating task file ---------------------------------------
#
# notify_blocks writes the parked run's `workflow_id` and `run_id` into the `input-required`
# history entry it appends, so whoever sees the file change (the worker's watcher, on any worker
# and after any restart) knows which run a decision in it is for, without an index of its own.


def dispatched_tasks(queue_dir: Path, workflow_id: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Task files this worker wrote for `workflow_id` (in the queue, not the archive)."""
    for path in iter_task_files(queue_dir, archive=False):
        try:
            task = load_task(path)
        except TaskFileError:
            continue
        payload = task.get("payload")
        if (
            task.get("source_agent") == SOURCE_AGENT
            and isinstance(payload, dict)
            and payload.get("workflow_id") == workflow_id
        ):
            yield path, task


# --- Dispatching a stage to an agent ---------------------------------------------------------

CLI_PATH = Path(__file__).resolve().parent.parent / "complete_activity.py"


def completion_command(status: str, message: str) -> str:
    """The exact command an agent runs: this checkout's CLI under the worker's own Python."""
    return (
        f"{shlex.quote(sys.executable)} {shlex.quote(str(CLI_PATH))} "
        f'"$TASK_TOKEN" {status} {message}'
    )


def supersede_earlier_attempts(
    queue_dir: Path, workflow_id: str, earlier_ids: Collection[str], number: int
) -> list[Path]:
    """Mark this stage's still-open files from earlier dispatches `superseded`: their tokens are
    dead. `earlier_ids` are the task ids of the stage's dispatches before `number` (a Temporal
    retry of the activity, or the operator's `retry` of a held stage, which is a new activity).
    """
    return _mark(
        queue_dir,
        workflow_id,
        lambda task: (
            str(task.get("id")) in earlier_ids and task.get("status") in (SUBMITTED, INPUT_REQUIRED)
        ),
        SUPERSEDED,
        f"Superseded by attempt {number}",
    )


def supersede_tasks(
    queue_dir: Path, workflow_id: str, task_ids: Collection[str], note: str
) -> list[Path]:
    """Mark these files `superseded` whatever their status: a rerun does their stages again."""
    return _mark(
        queue_dir,
        workflow_id,
        lambda task: str(task.get("id")) in task_ids and task.get("status") != SUPERSEDED,
        SUPERSEDED,
        note,
    )


def close_open_tasks(queue_dir: Path, workflow_id: str, note: str) -> list[Path]:
    """Mark every still-open task file of a finished workflow `cancelled`."""
    return _mark(
        queue_dir, workflow_id, lambda task: task.get("status") == SUBMITTED, CANCELLED, note
    )


def _mark(
    queue_dir: Path,
    workflow_id: str,
    pick: Callable[[dict[str, Any]], bool],
    status: str,
    note: str,
) -> list[Path]:
    marked = []
    for path, task in dispatched_tasks(queue_dir, workflow_id):
        if pick(task):
            update_task_status(path, status, note)
            marked.append(path)
    return marked
