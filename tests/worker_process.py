"""`worker.py` as a subprocess, configured by environment exactly as PM2 runs it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

from config import WorkerConfig
from tests.conftest import ROOT, wait_for


def worker_env(config: WorkerConfig, **extra: str) -> dict[str, str]:
    """The worker's whole configuration, from the environment as PM2 would give it."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VAULT_", "OTEL_", "TEMPORAL_", "LOG_", "TASK_QUEUE"))}
    env.update(
        TEMPORAL_ADDRESS=config.temporal_address,
        TEMPORAL_NAMESPACE="default",
        TASK_QUEUE=config.task_queue,
        AGENT_TASK_DIR=str(config.agent_task_dir),
        TEMPORAL_AUDIT_DIR=str(config.audit_dir),
        TEMPORAL_SUMMARY_DIR=str(config.summary_dir),
        SEND_MATRIX_SCRIPT=str(config.send_matrix_script),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env



class WorkerProcess:
    """`worker.py` in a subprocess; its stdout is the JSON log."""

    def __init__(self, env: dict[str, str], python_args: tuple[str, ...] = ()) -> None:
        self.env = env
        self.python_args = python_args
        self.stdout: list[str] = []
        self.stderr = ""
        self.returncode: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in self.stdout]
        return [e for e in parsed if name is None or e.get("event") == name]

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, *self.python_args, str(ROOT / "worker.py"),
            cwd=ROOT, env=self.env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        await wait_for(lambda: any('"worker_started"' in line for line in self.stdout)
                       or self._proc is None or self._proc.returncode is not None, timeout=60)
        assert self._proc.returncode is None, f"worker exited: {self.stdout} {self.stderr}"

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for raw in self._proc.stdout:
            self.stdout.append(raw.decode().rstrip("\n"))

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def kill(self) -> None:
        """kill -9: no shutdown, no flush, as a crash or the OOM killer would end it."""
        assert self._proc is not None
        self._proc.kill()

    async def stop(self) -> int:
        """SIGINT, as PM2 stops it: a graceful shutdown that flushes telemetry."""
        assert self._proc is not None and self._reader is not None
        if self._proc.returncode is None:
            self._proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(self._proc.wait(), 45)
        finally:
            if self._proc.returncode is None:
                self._proc.kill()
                await self._proc.wait()
        await self._reader
        assert self._proc.stderr is not None
        self.stderr = (await self._proc.stderr.read()).decode()
        assert self._proc.returncode is not None
        self.returncode = self._proc.returncode
        return self._proc.returncode


@contextlib.asynccontextmanager
async def worker_process(env: dict[str, str], *python_args: str) -> AsyncIterator[WorkerProcess]:
    proc = WorkerProcess(env, python_args)
    await proc.start()
    try:
        yield proc
    finally:
        await proc.stop()
