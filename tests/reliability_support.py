"""Real processes for the reliability and security suite: dev servers as subprocesses (each in
its own process group, always cleaned up), agents that answer task files, and the scan that
proves no secret reached a log. worker.py itself runs through tests/worker_process.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import text_encoding
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

import agent_calls
from activities import task_files
from complete_activity import EXIT_UNREACHABLE
from dev_server import dev_server_command
from tests.conftest import new_tasks, run_cli
from tests.worker_process import read_if_exists

# --- A dev server of our own, for stopping and restarting -------------------------------------


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
        return [*dev_server_command(self.address, "default", self.db, headless=True,
                                    log_level="error"),
                *(arg for ns in self.namespaces for arg in ("--namespace", ns))]

    async def start(self, timeout: float = 60.0) -> float:
        """Start and wait until a client can list workflows; returns the seconds that took."""
        started = time.monotonic()
        log = self.workdir / f"server-{self.starts}.log"
        self.starts += 1
        with log.open("wb") as fh:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command(), stdin=asyncio.subprocess.DEVNULL, stdout=fh,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        while True:
            if self.proc.returncode is not None:
                raise AssertionError(f"dev server exited {self.proc.returncode}:\n"
                                     + read_if_exists(log)[-3000:])
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
        return await Client.connect(self.address, namespace=namespace,
                                    data_converter=pydantic_data_converter)

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


# --- Agents ------------------------------------------------------------------------------------

Answer = tuple[str, str] | None  # ("success" | "failed", message), or None to hold the task


class QueueAgent:
    """Answers every new task file the worker writes, through the real complete_activity.py.

    `decide(path, task)` returns the answer, or None to hold the task (the test answers it
    later, e.g. while no worker runs). Answers run concurrently, at most `parallel` at a time.
    """

    def __init__(self, queue_dir: Path, address: str,
                 decide: Callable[[Path, dict[str, Any]], Answer], parallel: int = 4,
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
    agent_calls.complete, the very call complete_activity.py makes, without a process per
    answer. For load."""

    def __init__(self, client: Client, queue_dir: Path,
                 decide: Callable[[dict[str, Any]], Answer], parallel: int = 32) -> None:
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
        async with self.gate:
            try:
                task = await asyncio.to_thread(task_files.load_task, path)
                if task.get("source_agent") != task_files.SOURCE_AGENT:
                    return
                answer = await asyncio.to_thread(self.decide, task)
                assert answer is not None and answer[0] == "success", answer
                token = agent_calls.decode_token(task["payload"]["task_token"])
                await agent_calls.complete(self.client, token, answer[1])
                self.answered += 1
            except Exception as err:  # noqa: BLE001 - counted and reported by the test
                self.failures.append(f"{path.name}: {type(err).__name__}: {err}")


@contextlib.asynccontextmanager
async def client_agent(client: Client, queue_dir: Path,
                       decide: Callable[[dict[str, Any]], Answer], parallel: int = 32
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


def worker_tasks(queue_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every task file the worker wrote, queue and archive."""
    found = []
    for path in task_files.iter_task_files(queue_dir):
        task = task_files.load_task(path)
        if task.get("source_agent") == task_files.SOURCE_AGENT:
            found.append((path, task))
    return found


STAGE_OF_TYPE = {"build_prefab": "prefab", "build_plan": "implement", "security_audit": "audit",
                 "security_fix": "fixes", "build_closeout": "close"}


def stage_of(task: dict[str, Any]) -> str:
    """The stage a task file was written for; BuildPlan phases are `phase-<n>`."""
    if task["task_type"] == "build_phase":
        return f"phase-{task['payload']['phase_number']}"
    return STAGE_OF_TYPE[task["task_type"]]


def dispatch_counts(queue_dir: Path) -> Counter[tuple[str, str]]:
    """How many task files each (workflow id, stage) got: 1 everywhere means no duplicate."""
    counts: Counter[tuple[str, str]] = Counter()
    for _, task in worker_tasks(queue_dir):
        counts[(str(task["payload"]["workflow_id"]), stage_of(task))] += 1
    return counts


def leftovers(*dirs: Path) -> list[Path]:
    """Temporary or partial files an interrupted write could leave behind."""
    found: list[Path] = []
    for d in dirs:
        if d.exists():
            found += [p for p in d.rglob("*") if p.name.endswith(".tmp")]
    return found


# --- Secrets -------------------------------------------------------------------------------------

# Any token-shaped text, whoever's token it is: a bytes repr after "token", protobuf text of a
# task_token field, Core's TaskToken(...) display, each unless redacted.
TOKEN_SHAPES = re.compile(
    r"token\W{0,3}b['\"](?!<redacted)"
    r"|task_token[\"']?\s*[:=]\s*b?[\"'](?!<redacted)"
    r"|TaskToken\((?!<redacted)"
)
PEM_MARKERS = ("-----BEGIN", "PRIVATE KEY-----")


def harvest_tokens(*queue_dirs: Path) -> list[bytes]:
    """The raw task token of every task file the worker wrote (queue and archive)."""
    tokens = []
    for queue_dir in queue_dirs:
        for _, task in worker_tasks(queue_dir):
            tokens.append(base64.b64decode(task["payload"]["task_token"], validate=True))
    return tokens


def token_forms(token: bytes) -> list[str]:
    """Every way a token has been seen printed: base64 (the task file, Core's TaskToken),
    Python's bytes repr (SDK debug lines), protobuf text escaping (SDK completion dumps), and
    each of those as escaped inside a JSON string."""
    forms = {
        base64.b64encode(token).decode(),
        repr(token)[2:-1],
        text_encoding.CEscape(token, as_utf8=False),
        text_encoding.CEscape(token, as_utf8=True),
    }
    forms |= {json.dumps(f)[1:-1] for f in forms}  # as they appear inside a JSON log line
    return sorted(forms)


@dataclass
class SecretScan:
    """Occurrences of secrets in texts; `hits` must be empty."""

    texts: int = 0
    chars: int = 0
    needles: int = 0
    hits: list[str] = field(default_factory=list)


def scan_for_secrets(texts: Iterable[str], tokens: Iterable[bytes],
                     other_secrets: Iterable[str] = ()) -> SecretScan:
    needles = [form for t in tokens for form in token_forms(t)]
    needles += [s for s in other_secrets if s]
    scan = SecretScan(needles=len(needles))
    for text in texts:
        scan.texts += 1
        scan.chars += len(text)
        for needle in needles:
            if needle in text:
                scan.hits.append(f"secret {needle[:10]}... in a log")
        for marker in PEM_MARKERS:
            if marker in text:
                scan.hits.append(f"PEM marker {marker!r} in a log")
        for match in TOKEN_SHAPES.finditer(text):
            start = max(match.start() - 60, 0)
            scan.hits.append(f"token-shaped text: {text[start:match.end() + 20]!r}")
    return scan
