"""Instant scripted agents and operator for the benchmarks, the same for both sides.

They learn about new task files through inotify (no directory scans, no polling delay), take the
token and complete the activity through the bench's client, so what differs between the two
sides is the worker, never the agent. Stage numbers are the pipeline's: 1 prefab, 2 implement,
3 audit, 5 fixes, 8 close (the bare pipeline numbers its activities the same way).
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import os
import re
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client, WorkflowUpdateFailedError

from activities import task_files

IN_CLOSE_WRITE = 0x8
IN_MOVED_TO = 0x80
IN_Q_OVERFLOW = 0x4000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
STAGE_OF_TYPE = {
    "build_prefab": 1,
    "build_plan": 2,
    "security_audit": 3,
    "security_fix": 5,
    "build_closeout": 8,
}
RESULT = {"status": "success", "output": "bench"}
_NEEDED = {"task_token", "task_type", "workflow_id"}
_FIELD = re.compile(
    r"^ *(task_token|task_type|output_dir|workflow_id|source_agent): (\S+)$", re.MULTILINE
)


class Inotify:
    """Names moved into (or written and closed in) one directory, as they happen."""

    def __init__(self, directory: Path, on_name: Callable[[str, float], None]) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        directory.mkdir(parents=True, exist_ok=True)
        wd = self._libc.inotify_add_watch(
            self.fd, str(directory).encode(), IN_MOVED_TO | IN_CLOSE_WRITE
        )
        if wd < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch")
        self.directory = directory
        self.on_name = on_name
        asyncio.get_running_loop().add_reader(self.fd, self._read)

    def _read(self) -> None:
        now = time.monotonic()
        try:
            data = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return
        offset = 0
        while offset < len(data):
            _, mask, _, length = struct.unpack_from("iIII", data, offset)
            name = data[offset + 16 : offset + 16 + length].rstrip(b"\0").decode()
            offset += 16 + length
            if mask & IN_Q_OVERFLOW:
                for entry in os.scandir(self.directory):
                    self.on_name(entry.name, now)
            elif name:
                self.on_name(name, now)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)


def task_fields(text: str) -> dict[str, str]:
    """The few fields the agent needs, by regex (cheap, like reading the bare token file);
    YAML only when a field is missing (e.g. a quoted value)."""
    fields: dict[str, str] = {}
    for key, value in _FIELD.findall(text):
        fields.setdefault(key, value)
    if fields.get("source_agent") == task_files.SOURCE_AGENT and not _NEEDED <= fields.keys():
        data = yaml.safe_load(text)
        payload = data.get("payload", {}) if isinstance(data, dict) else {}
        if isinstance(data, dict):
            fields = {
                "source_agent": str(data.get("source_agent")),
                "task_type": str(data.get("task_type")),
                **{
                    k: str(payload[k])
                    for k in ("task_token", "output_dir", "workflow_id")
                    if k in payload
                },
            }
    return fields


class Agent:
    """Completes tasks instantly and, when asked, approves gates by the `approve` update.

    side: "worker" (task YAML files) or "bare" (`<wf>.<n>.tok` files, `<wf>.gate` markers).
    complete: the stage numbers to complete at once; others are only recorded.
    triage: what the audit writes (worker side): {"blocks": [...], "flags": [...]}.
    """

    def __init__(
        self,
        side: str,
        client: Client,
        directory: Path,
        *,
        complete: set[int],
        approve: bool = False,
        triage: dict[str, list[str]] | None = None,
    ) -> None:
        self.side = side
        self.client = client
        self.directory = directory
        self.complete = complete
        self.approve = approve
        self.triage = triage or {}
        self.arrivals: dict[tuple[str, int], float] = {}
        self.tokens: dict[tuple[str, int], bytes] = {}
        self.gated: dict[str, float] = {}
        self.origins: dict[str, str] = {}  # worker side: originating task file name -> wf id
        self.errors: list[str] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()
        self._watch: Inotify | None = None

    async def __aenter__(self) -> Agent:
        self._watch = Inotify(self.directory, self._on_name)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._watch is not None
        self._watch.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_name(self, name: str, now: float) -> None:
        try:
            if self.side == "bare":
                self._on_bare(name, now)
            else:
                self._on_worker(name, now)
        except (OSError, ValueError, KeyError) as err:
            self.errors.append(f"{name}: {type(err).__name__}: {err}")
        self._changed.set()

    def _on_bare(self, name: str, now: float) -> None:
        if name.endswith(".tok"):
            wf, n = name[:-4].rsplit(".", 1)
            self._arrived(wf, int(n), (self.directory / name).read_bytes(), now, {})
        elif name.endswith(".gate"):
            self._gate(name[:-5], now)

    def _on_worker(self, name: str, now: float) -> None:
        if not name.endswith(".yml"):
            return
        text = (self.directory / name).read_text()
        if name in self.origins:
            if f"status: {task_files.INPUT_REQUIRED}" in text:
                self._gate(self.origins[name], now)
            return
        fields = task_fields(text)
        if fields.get("source_agent") != task_files.SOURCE_AGENT or "task_type" not in fields:
            return
        stage = STAGE_OF_TYPE.get(fields["task_type"], 0)
        token = base64.b64decode(fields["task_token"])
        self._arrived(fields["workflow_id"], stage, token, now, fields)

    def _arrived(
        self, wf: str, stage: int, token: bytes, now: float, fields: dict[str, str]
    ) -> None:
        if (wf, stage) in self.arrivals:
            return
        self.arrivals[(wf, stage)] = now
        self.tokens[(wf, stage)] = token
        if stage in self.complete:
            self._spawn(self._complete(wf, stage, token, fields))

    def _gate(self, wf: str, now: float) -> None:
        if wf in self.gated:
            return
        self.gated[wf] = now
        if self.approve:
            self._spawn(self.send_approve(wf))

    async def _complete(self, wf: str, stage: int, token: bytes, fields: dict[str, str]) -> None:
        if stage == 3 and self.side == "worker":
            out = Path(fields["output_dir"])
            (out / "report.md").write_text("# report\n")
            (out / "triage-output.yml").write_text(yaml.safe_dump(self.triage))
        try:
            await self.client.get_async_activity_handle(task_token=token).complete(RESULT)
        except Exception as err:  # noqa: BLE001 - recorded, reported by the bench
            self.errors.append(f"complete {wf}/{stage}: {type(err).__name__}: {err}")

    async def send_approve(self, wf: str) -> None:
        """`approve`, retried while the gate is not open yet (the update's validator refuses)."""
        handle = self.client.get_workflow_handle(wf)
        for _ in range(500):
            try:
                await handle.execute_update("approve")
                return
            except WorkflowUpdateFailedError:
                await asyncio.sleep(0.02)
        self.errors.append(f"approve {wf}: refused 500 times")

    async def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{what}: not within {timeout:.0f} s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
            except TimeoutError:
                pass

    async def arrival(self, wf: str, stage: int, timeout: float = 60) -> float:
        await self.wait(lambda: (wf, stage) in self.arrivals, timeout, f"{wf} stage {stage}")
        return self.arrivals[(wf, stage)]
