"""Fake agents: they answer the worker's task files as real agents do."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from temporalio.client import Client

import agent_calls
from activities import task_files
from config import WorkerConfig
from exceptions import TaskFileError
from harness.cli import run_cli
from harness.env import running_worker
from program_exit import EXIT_UNREACHABLE


def new_tasks(queue_dir: Path, seen: set[str]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The worker's task files in the queue not yet in `seen`, each added as it is yielded: what
    an agent's scan answers, once each. Files of other agents are left alone."""
    for path in task_files.iter_task_files(queue_dir, archive=False):
        if path.name in seen:
            continue
        try:
            task = task_files.load_task(path)
        except TaskFileError:  # being written (a test's plain write_text): read it next scan
            continue
        if task.get("source_agent") != task_files.SOURCE_AGENT:
            continue
        seen.add(path.name)
        yield path, task


# ("success" | "failed", message), or None to leave the task alone (a test may answer it later)
# (status, message), or (status, message, the --usage JSON the agent reports)
Decision = tuple[str, str] | tuple[str, str, str] | None
Decide = Callable[[dict[str, Any]], Decision | Awaitable[Decision]]
# complete_activity.py's exit 3 (Temporal unreachable) is retried with these pauses, as
# docs/AGENTS.md tells agents: a server outage must not strand a task an agent has finished.
UNREACHABLE_PAUSES = (0.5, 1, 2, 4, 8, 8, 8, 8, 8, 8, 8, 8, 8)


class ScriptedAgent:
    """The one fake agent: watches a task directory and answers each new task file of the
    worker's as `decide(task)` says.

    It answers through the real complete_activity.py (`--task-file`), or, given `client`, by
    the task token through that client: the very call the CLI makes, without a process per
    answer (for load). At most `parallel` answers are under way at once. A task left alone
    (`decide` returned None) can be answered later with `answer` or `complete_now`, by the
    path `path_of(task)` gives.
    """

    def __init__(
        self,
        queue_dir: Path,
        address: str,
        decide: Decide,
        env: dict[str, str] | None = None,
        *,
        client: Client | None = None,
        parallel: int = 1,
    ) -> None:
        self.queue_dir = queue_dir
        self.address = address
        self.decide = decide
        self.env = env  # the CLI's environment (e.g. Vault for mTLS); default: plain cli_env
        self.client = client
        self.gate = asyncio.Semaphore(parallel)
        self.seen: set[str] = set()
        self.paths: dict[str, Path] = {}
        self.handled: list[dict[str, Any]] = []  # tasks answered, in the order they were
        self.results: list[tuple[str, int, str]] = []  # (task_type, exit code, stderr)
        self.ignored: list[str] = []  # task types left alone
        self.codes: Counter[int] = Counter()
        self.errors: list[str] = []  # answers that did not go through
        self.outputs: list[str] = []  # every stdout and stderr of the CLI
        self._pending: set[asyncio.Task[None]] = set()
        self._scan_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ScriptedAgent:
        self._scan_task = asyncio.create_task(self._scan())
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Let answers in flight finish and be recorded: the workflow can end (and the test
        # leave this block) before the CLI that ended it has exited. Cancelling one then would
        # orphan the subprocess and drop the task from `handled`.
        assert self._scan_task is not None
        self._scan_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._scan_task
        if self._pending:
            await asyncio.wait(self._pending, timeout=90)
        for task in self._pending:
            task.cancel()

    @property
    def answered(self) -> int:
        """How many answers went through."""
        return self.codes[0]

    def path_of(self, task: dict[str, Any]) -> Path:
        return self.paths[str(task["id"])]

    async def _scan(self) -> None:
        while True:
            found = await asyncio.to_thread(lambda: list(new_tasks(self.queue_dir, self.seen)))
            for path, task in found:
                self.paths[str(task["id"])] = path
                outcome = self.decide(task)
                decision = await outcome if isinstance(outcome, Awaitable) else outcome
                if decision is None:
                    self.ignored.append(task["task_type"])
                else:
                    status, message, *usage = decision
                    self.answer(path, status, message, usage[0] if usage else "", task=task)
            await asyncio.sleep(0.05)

    def answer(
        self,
        path: Path,
        status: str,
        message: str,
        usage: str = "",
        task: dict[str, Any] | None = None,
    ) -> asyncio.Task[None]:
        """Answer one task in the background, retrying while Temporal is unreachable."""
        job = asyncio.create_task(self._answer(path, status, message, usage, task))
        self._pending.add(job)
        job.add_done_callback(self._pending.discard)
        return job

    async def _answer(
        self, path: Path, status: str, message: str, usage: str, task: dict[str, Any] | None
    ) -> None:
        async with self.gate:
            await self.complete_now(
                path, status, message, usage=usage, task=task, retry_unreachable=True
            )

    async def complete_now(
        self,
        path: Path,
        status: str = "success",
        message: str = "done",
        *,
        usage: str = "",
        task: dict[str, Any] | None = None,
        retry_unreachable: bool = False,
    ) -> int:
        """Answer one task now and wait for it; returns the CLI's exit code (by client: 0, or
        1 when the call failed). Each answer is recorded once, with its final exit code."""
        if task is None:
            task = await asyncio.to_thread(task_files.load_task, path)
        pauses = iter(UNREACHABLE_PAUSES if retry_unreachable else ())
        while True:
            if self.client is not None:
                code, out, err = await self._by_client(task, status, message)
            else:
                reported = ["--usage", usage] if usage else []
                code, out, err = await run_cli(
                    ["--task-file", str(path), status, message, *reported],
                    self.address,
                    env=self.env,
                )
            self.outputs += [out, err]
            pause = next(pauses, None)
            if code != EXIT_UNREACHABLE or pause is None:
                break
            await asyncio.sleep(pause)
        self.codes[code] += 1
        self.handled.append(task)
        self.results.append((task["task_type"], code, err))
        if code != 0:
            self.errors.append(f"{path.name}: exit {code}: {err.strip()}")
        return code

    async def _by_client(
        self, task: dict[str, Any], status: str, message: str
    ) -> tuple[int, str, str]:
        """agent_calls' complete or fail: the very call complete_activity.py makes."""
        assert self.client is not None
        try:
            token = agent_calls.decode_token(task["payload"]["task_token"])
            if status == "success":
                await agent_calls.complete(self.client, token, message)
            else:
                await agent_calls.fail(self.client, token, message)
        except agent_calls.AgentCallError as err:
            return err.code, "", str(err)
        return 0, "", ""


def succeed_all(task: dict[str, Any]) -> Decision:
    return ("success", f"{task['task_type']}-done")


@contextlib.asynccontextmanager
async def client_agent(
    client: Client, queue_dir: Path, decide: Decide, parallel: int = 32
) -> AsyncIterator[ScriptedAgent]:
    """The agent answering by the client, `parallel` at a time: for load."""
    async with ScriptedAgent(queue_dir, "", decide, client=client, parallel=parallel) as agent:
        yield agent


@contextlib.asynccontextmanager
async def worker_and_agent(
    client: Client,
    config: WorkerConfig,
    decide: Decide,
    worker: AbstractAsyncContextManager[Any] | None = None,
) -> AsyncIterator[ScriptedAgent]:
    """`worker` (by default the production worker in this process, on `config`) and the agent
    answering `config`'s task directory as `decide` says, both for the block: the two halves
    every pipeline and plan needs."""
    async with (
        running_worker(client, config) if worker is None else worker,
        ScriptedAgent(config.agent_task_dir, config.temporal_address, decide) as agent,
    ):
        yield agent
