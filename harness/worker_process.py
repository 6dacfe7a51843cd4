"""`worker.py` as a subprocess, configured by environment exactly as PM2 runs it.

`worker_command` and `worker_env` are the one way the tests, the bench and the demo start it
(and `agent_runner.py`, an entry point of the same kind). `WorkerProcess` is the tests' run of
it: started and restarted, stopped by signal or killed -9, or left to exit on its own; each
run's stdout and stderr go to files of their own, so a test reads them after the fact and a
busy test never stalls the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from config import WorkerConfig
from harness.env import ROOT

WORKER = ROOT / "worker.py"
RUNNER = ROOT / "agent_runner.py"
# Settings of the test process that must not reach a worker started here: every variable the
# worker reads (tests/test_config.py holds this list to its DEFAULTS), and PM2's.
FOREIGN_VARS = (
    "VAULT_",
    "OTEL_",
    "PM2_",
    "MATRIX_",
    "TEMPORAL_",
    "LOG_",
    "TASK_QUEUE",
    "AGENT_TASK_DIR",
    "BLOCK_POLL_SECONDS",
    "SEND_MATRIX_SCRIPT",
    "WORKER_HOST",
    "AGENT_HOSTS",
    "HOST_WAIT_SECONDS",
    "AGENT_HEARTBEAT_TIMEOUT",
    "FAILURE_HOLD",
    "MAX_AUDIT_ROUNDS",
    "VERIFY_FIXES",
    "DECISION_REMINDERS",
    "PIPELINE_BUDGET_USD",
)


def worker_command(script: Path = WORKER, python_args: Iterable[str] = ()) -> list[str]:
    """The command line of `script` (worker.py unless told) as PM2 runs it: this interpreter,
    then `python_args` (e.g. `-c SCRIPT`) before the script."""
    return [sys.executable, *python_args, str(script)]


def bare_env(**extra: str) -> dict[str, str]:
    """This process's environment without any setting of the worker's, plus `extra`: a worker
    started with it reads only what its caller sets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_VARS)}
    env.update(extra)
    return env


def worker_env(
    config: WorkerConfig, base: Mapping[str, str] | None = None, /, **extra: str
) -> dict[str, str]:
    """What PM2 would give worker.py for `config`: its queue, directories and poll interval.

    `base` is the environment to build on (e.g. an operator's Vault settings); by default this
    process's, without any setting of the worker's. `extra` (LOG_LEVEL, LOG_FILE, ...) goes last.
    """
    env = bare_env() if base is None else dict(base)
    env.update(
        TEMPORAL_ADDRESS=config.temporal_address,
        TEMPORAL_NAMESPACE="default",
        TASK_QUEUE=config.task_queue,
        AGENT_TASK_DIR=str(config.agent_task_dir),
        TEMPORAL_AUDIT_DIR=str(config.audit_dir),
        TEMPORAL_SUMMARY_DIR=str(config.summary_dir),
        SEND_MATRIX_SCRIPT=str(config.send_matrix_script),
        BLOCK_POLL_SECONDS=str(config.block_poll_seconds),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def debug_env(
    config: WorkerConfig, log_dir: Path, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """worker_env at DEBUG, logging to `log_dir`/worker.log as well: the most the worker
    writes, for the tests that prove no secret is in any of it."""
    return worker_env(config, base, LOG_LEVEL="DEBUG", LOG_FILE=str(log_dir / "worker.log"))


def read_if_exists(path: Path) -> str:
    """A log file's text; "" for one not written yet."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _parse_events(text: str, name: str | None = None) -> list[dict[str, Any]]:
    """The JSON log lines of `text`, those named `name` if given.

    Every complete line must be a JSON object: the worker's stdout is its log and nothing else.
    Only an unterminated last line is skipped, as kill -9 or a file size limit can cut one.
    """
    lines = text.split("\n")[:-1]  # the part after the last newline is no whole line
    events = []
    for line in lines:
        event = json.loads(line)
        assert isinstance(event, dict), line
        if name is None or event.get("event") == name:
            events.append(event)
    return events


@dataclass
class WorkerRun:
    """One run of worker.py: its process, and the files its stdout and stderr went to."""

    proc: asyncio.subprocess.Process
    out: Path
    err: Path
    started: float

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return _parse_events(read_if_exists(self.out), name)


class WorkerProcess:
    """worker.py, started and restarted as PM2 would; an async context manager for one run.

    Runs with cwd `cwd` (the repository, as ecosystem.config.js has it) and `python_args`
    before the script (e.g. `-c SCRIPT`). `preexec` runs in the child before exec (resource
    limits); `prefix` wraps the command (e.g. setpriv). `script` and `ready_event` make it
    another entry point of the same kind (agent_runner.py, see tests/helpers/runner.py). Every
    run is a process-group leader, so kill -9 takes its children too. `stop()` sends
    `stop_signal`: SIGINT is what PM2 sends, SIGTERM what systemd sends.
    """

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        *,
        name: str = "worker",
        cwd: Path = ROOT,
        python_args: Iterable[str] = (),
        prefix: Iterable[str] = (),
        preexec: Callable[[], None] | None = None,
        stop_signal: signal.Signals = signal.SIGINT,
        script: Path = WORKER,
        ready_event: str = "worker_started",
    ) -> None:
        self.script = script
        self.ready_event = ready_event
        self.env = env
        self.log_dir = log_dir
        self.name = name
        self.cwd = cwd
        self.python_args = list(python_args)
        self.prefix = list(prefix)
        self.preexec = preexec
        self.stop_signal = stop_signal
        self.runs: list[WorkerRun] = []

    async def __aenter__(self) -> WorkerProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def current(self) -> WorkerRun | None:
        return self.runs[-1] if self.runs else None

    @property
    def pid(self) -> int:
        assert self.current is not None
        return self.current.proc.pid

    @property
    def returncode(self) -> int | None:
        """The last run's exit status; None while it runs."""
        return None if self.current is None else self.current.proc.returncode

    def alive(self) -> bool:
        return self.current is not None and self.current.proc.returncode is None

    async def _launch(self) -> WorkerRun:
        assert not self.alive(), "already running"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        n = len(self.runs)
        out = self.log_dir / f"{self.name}-{n}.out"
        err = self.log_dir / f"{self.name}-{n}.err"
        with out.open("wb") as out_fh, err.open("wb") as err_fh:
            proc = await asyncio.create_subprocess_exec(
                *self.prefix,
                *worker_command(self.script, self.python_args),
                env=self.env,
                cwd=self.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out_fh,
                stderr=err_fh,
                start_new_session=True,
                preexec_fn=self.preexec,
            )
        run = WorkerRun(proc, out, err, time.monotonic())
        self.runs.append(run)
        return run

    async def start(self, timeout: float = 60.0, ready: str | None = None) -> float:
        """Start a run and wait for `ready` on its stdout (by default the JSON event named by
        `ready_event`, `worker_started`); returns the seconds that took."""
        ready = ready or f'"{self.ready_event}"'
        run = await self._launch()
        deadline = run.started + timeout
        while ready not in read_if_exists(run.out):
            if run.proc.returncode is not None or time.monotonic() > deadline:
                await self.kill9()
                raise AssertionError(
                    f"{self.script.name} did not start (exit {run.proc.returncode}):\n"
                    + read_if_exists(run.err)[-3000:]
                    + read_if_exists(run.out)[-3000:]
                )
            await asyncio.sleep(0.05)
        return time.monotonic() - run.started

    async def run_to_exit(self, timeout: float = 60.0) -> tuple[int, str, str]:
        """A run expected to end on its own (a refused setting, no server); returns
        (exit code, stdout, stderr) of that run. Stopped if it is still there after `timeout`."""
        run = await self._launch()
        try:
            await asyncio.wait_for(run.proc.wait(), timeout)
        finally:
            code = await self.stop()
        assert code is not None
        return code, read_if_exists(run.out), read_if_exists(run.err)

    async def kill9(self) -> None:
        """SIGKILL to the whole process group: no shutdown code of any kind runs."""
        run = self.current
        if run is None or run.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.proc.pid, signal.SIGKILL)
        await run.proc.wait()

    async def stop(self, timeout: float = 45.0) -> int | None:
        """`stop_signal`, a graceful shutdown that flushes telemetry; SIGKILL to the group if it
        will not go. Returns the exit status (None if never started)."""
        run = self.current
        if run is None:
            return None
        if run.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                run.proc.send_signal(self.stop_signal)
            try:
                await asyncio.wait_for(run.proc.wait(), timeout)
            except TimeoutError:
                await self.kill9()
        with contextlib.suppress(ProcessLookupError):  # stragglers of the group
            os.killpg(run.proc.pid, signal.SIGKILL)
        return run.proc.returncode

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    @property
    def stdout(self) -> str:
        """What every run wrote to stdout: the JSON log."""
        return "".join(read_if_exists(r.out) for r in self.runs)

    @property
    def stderr(self) -> str:
        return "".join(read_if_exists(r.err) for r in self.runs)

    def outputs(self) -> list[str]:
        """Every byte each run wrote to stdout and stderr, and the LOG_FILE."""
        texts = [read_if_exists(p) for r in self.runs for p in (r.out, r.err)]
        log_file = self.env.get("LOG_FILE")
        if log_file and Path(log_file).exists():
            texts.append(read_if_exists(Path(log_file)))
        return texts

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The log lines of every run, in order, those named `name` if given."""
        return [e for run in self.runs for e in run.events(name)]
