"""A Temporal dev server as a subprocess of our own, for stopping, killing and restarting it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from dev_server import dev_server_command
from harness.worker_process import read_if_exists


class DevServer:
    """`temporal server start-dev` on a SQLite file (WAL), as `make run` starts it."""

    def __init__(self, workdir: Path, port: int, namespaces: Iterable[str] = ()) -> None:
        self.workdir = workdir
        self.port = port
        self.namespaces = list(namespaces)  # created at start, besides `default`
        self.db = workdir / "temporal.db"
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            *dev_server_command(self.address, "default", self.db, headless=True, log_level="error"),
            *(arg for ns in self.namespaces for arg in ("--namespace", ns)),
        ]

    async def start(self, timeout: float = 60.0) -> float:
        """Start and wait until a client can list workflows; returns the seconds that took."""
        started = time.monotonic()
        log = self.workdir / f"server-{self.starts}.log"
        self.starts += 1
        with log.open("wb") as fh:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fh,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        while True:
            if self.proc.returncode is not None:
                raise AssertionError(
                    f"dev server exited {self.proc.returncode}:\n" + read_if_exists(log)[-3000:]
                )
            with contextlib.suppress(Exception):
                client = await asyncio.wait_for(self.connect(), 5)
                await asyncio.wait_for(client.count_workflows(), 5)
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                await self.stop()
                raise AssertionError("dev server did not answer:\n" + read_if_exists(log)[-3000:])
            await asyncio.sleep(0.2)

    def logs(self) -> list[str]:
        """What the server wrote, run by run."""
        return [read_if_exists(self.workdir / f"server-{n}.log") for n in range(self.starts)]

    async def connect(self, namespace: str = "default") -> Client:
        return await Client.connect(
            self.address, namespace=namespace, data_converter=pydantic_data_converter
        )

    async def kill9(self) -> None:
        """SIGKILL to the server's group: no shutdown code runs, SQLite is left as it was."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()

    async def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, the way an operator stops it; SIGKILL to the group if it hangs."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
