"""Fake agents: they answer the worker's task files as real agents do."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from temporalio.client import Client

from activities import task_files
from complete_activity import EXIT_UNREACHABLE
from harness.cli import run_cli


def new_tasks(queue_dir: Path, seen: set[str]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The worker's task files in the queue not yet in `seen`, each added as it is yielded: what
    an agent's scan answers, once each. Files of other agents are left alone."""
    for path in task_files.iter_task_files(queue_dir, archive=False):
        if path.name in seen:
            continue
        task = task_files.load_task(path)
        if task.get("source_agent") != task_files.SOURCE_AGENT:
            continue
        seen.add(path.name)
        yield path, task


Decision = tuple[str, str] | None


Decide = Callable[[dict[str, Any]], Decision | Awaitable[Decision]]


class ScriptedAgent:
    """Watches a task directory and completes each new task with complete_activity.py.

    `decide(task)` returns ("success" | "failed", message), or None to leave the task alone.
    """

    def __init__(
        self, queue_dir: Path, address: str, decide: Decide, env: dict[str, str] | None = None
    ) -> None:
        self.queue_dir = queue_dir
        self.address = address
        self.decide = decide
        self.env = env
        self.seen: set[str] = set()
        self.handled: list[dict[str, Any]] = []
        self.results: list[tuple[str, int, str]] = []
        self.ignored: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def __aenter__(self) -> ScriptedAgent:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Let a completion in flight finish and be recorded: the workflow can end (and the test
        # leave this block) before the CLI that ended it has exited. Cancelling it then would
        # orphan the subprocess and drop the task from `handled`.
        assert self._task is not None
        self._stopping = True
        try:
            await asyncio.wait_for(self._task, 90)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while not self._stopping:
            for path, task in new_tasks(self.queue_dir, self.seen):
                if self._stopping:
                    return
                outcome = self.decide(task)
                decision: Decision = (
                    await outcome if isinstance(outcome, Awaitable) else outcome
                )
                if decision is None:
                    self.ignored.append(task["task_type"])
                    continue
                status, message = decision
                code, _, err = await run_cli(
                    ["--task-file", str(path), status, message], self.address, env=self.env
                )
                self.handled.append(task)
                self.results.append((task["task_type"], code, err))
            await asyncio.sleep(0.05)


def succeed_all(task: dict[str, Any]) -> Decision:
    return ("success", f"{task['task_type']}-done")


class QueueAgent:
    """Answers every new task file the worker writes, through the real complete_activity.py.

    `decide(path, task)` returns the answer, or None to hold the task (the test answers it
    later, e.g. while no worker runs). Answers run concurrently, at most `parallel` at a time.
    """

    def __init__(self, queue_dir: Path, address: str,
                 decide: Callable[[Path, dict[str, Any]], Decision], parallel: int = 4,
                 env: dict[str, str] | None = None) -> None:
        self.queue_dir = queue_dir
        self.address = address
        self.decide = decide
        self.env = env  # the CLI's environment (e.g. Vault for mTLS); default: plain cli_env
        self.gate = asyncio.Semaphore(parallel)
        self.seen: set[str] = set()
        self.codes: Counter[int] = Counter()
        self.errors: list[str] = []
        self.outputs: list[str] = []
        self._pending: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> QueueAgent:
        self._loop_task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._loop_task is not None
        self._loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._loop_task
        if self._pending:
            await asyncio.wait(self._pending, timeout=90)

    async def _loop(self) -> None:
        while True:
            for path, task in new_tasks(self.queue_dir, self.seen):
                answer = self.decide(path, task)
                if answer is not None:
                    self.answer(path, *answer)
            await asyncio.sleep(0.05)

    def answer(self, path: Path, status: str, message: str) -> asyncio.Task[None]:
        task = asyncio.create_task(self._run(path, status, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def complete_now(self, path: Path, status: str = "success", message: str = "done"
                           ) -> int:
        """Complete one task through the CLI and wait for it; returns the exit code."""
        code, out, err = await run_cli(["--task-file", str(path), status, message],
                                       self.address, env=self.env)
        self.codes[code] += 1
        self.outputs += [out, err]
        if code != 0:
            self.errors.append(f"{path.name}: exit {code}: {err.strip()}")
        return code

    async def _run(self, path: Path, status: str, message: str) -> None:
        """As docs/AGENTS.md tells agents: exit 3 (Temporal unreachable) is retried with a
        growing pause; a server outage must not strand a task an agent already finished."""
        async with self.gate:
            for pause in (0.5, 1, 2, 4, 8, 8, 8, 8, 8, 8, 8, 8, 8):
                if await self.complete_now(path, status, message) != EXIT_UNREACHABLE:
                    return
                self.errors.pop()  # not final: retried below
                await asyncio.sleep(pause)
            await self.complete_now(path, status, message)  # final: a failure stays in errors


class ClientAgent:
    """Answers every new task file through the Temporal client in this process, by its token:
    the very call complete_activity.py makes, without a process per answer. For load."""

    def __init__(self, client: Client, queue_dir: Path,
                 decide: Callable[[dict[str, Any]], Decision], parallel: int = 32) -> None:
        self.client = client
        self.queue_dir = queue_dir
        self.decide = decide
        self.seen: set[str] = set()
        self.answered = 0
        self.failures: list[str] = []
        self.gate = asyncio.Semaphore(parallel)
        self.pending: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(self.queue_dir):
                    if entry.name.endswith(".yml") and entry.name not in self.seen:
                        self.seen.add(entry.name)
                        task = asyncio.create_task(self.answer(Path(entry.path)))
                        self.pending.add(task)
                        task.add_done_callback(self.pending.discard)
            await asyncio.sleep(0.05)

    async def answer(self, path: Path) -> None:
        from models import BuildPhaseResult

        async with self.gate:
            try:
                task = await asyncio.to_thread(task_files.load_task, path)
                if task.get("source_agent") != task_files.SOURCE_AGENT:
                    return
                answer = await asyncio.to_thread(self.decide, task)
                assert answer is not None and answer[0] == "success", answer
                token = base64.b64decode(task["payload"]["task_token"], validate=True)
                await self.client.get_async_activity_handle(task_token=token).complete(
                    BuildPhaseResult(status="success", output=answer[1]))
                self.answered += 1
            except Exception as err:  # noqa: BLE001 - counted and reported by the test
                self.failures.append(f"{path.name}: {type(err).__name__}: {err}")


@contextlib.asynccontextmanager
async def client_agent(client: Client, queue_dir: Path,
                       decide: Callable[[dict[str, Any]], Decision], parallel: int = 32
                       ) -> AsyncIterator[ClientAgent]:
    agent = ClientAgent(client, queue_dir, decide, parallel)
    loop = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        if agent.pending:
            await asyncio.wait(agent.pending, timeout=30)
