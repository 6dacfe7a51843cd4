"""One agent run for one claimed task: start it, heartbeat its stage, end it, and say how.

`AgentRun.run` returns the `Outcome`; telling the stage and writing the file is the caller's
(runner/service.py), so every way a run ends goes through one place there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client

import agent_calls
from activities import task_files
from activities.task_files import CANCELLED, FAILED
from program_exit import EXIT_STOP, EXIT_TOKEN, EXIT_USAGE
from runner import claims, process
from runner.agent_env import agent_environment, expand_command
from runner.agent_task import agent_copy
from runner.config import AgentCommand, RunnerSettings
from runner.outcomes import Outcome, heartbeat_interval, run_outcome
from runner.usage import Report, reader_for
from usage import MAX_USAGE_BYTES, Usage, UsageError, parse_usage

TAIL_LINES = 20


@dataclass(frozen=True)
class RunFiles:
    """One task's files beside the queue, in AGENT_RUNNER_LOG_DIR (0700): the agent's output,
    the text and the usage it may write, and its copy of the task file."""

    log: Path
    result: Path
    usage: Path
    task: Path

    @classmethod
    def of(cls, log_dir: Path, task_file: Path) -> RunFiles:
        stem = task_file.stem
        return cls(
            log_dir / f"{stem}.log",
            log_dir / f"{stem}.result",
            log_dir / f"{stem}.usage",
            log_dir / f"{stem}.task.yaml",  # not `*.yml`: never taken for a queued task
        )


@dataclass
class AgentRun:
    settings: RunnerSettings
    client: Client
    log: Any
    base_env: Mapping[str, str]
    stop: asyncio.Event  # the runner is stopping
    path: Path
    task: dict[str, Any]
    agent: AgentCommand
    token: bytes
    note: str  # for the history and the agent's log: why this run (a re-run says so)
    files: RunFiles
    fields: dict[str, Any]

    async def run(self) -> Outcome:
        files = self.files
        files.result.unlink(missing_ok=True)
        files.usage.unlink(missing_ok=True)
        agent_task = agent_copy(self.task, str(files.result))
        task_files.write_text_atomic(files.task, task_files.dump_yaml(agent_task), 0o600)
        env = agent_environment(
            self.base_env, agent_task, files.task, files.result, files.usage, self.agent.env
        )
        argv = expand_command(self.agent.command, env)
        starting = f"{process.RUNNER_NOTE} {self.note or 'starting'}: {argv[0]}"
        process.note_in_log(files.log, starting)
        offset = process.log_size(files.log)
        try:
            proc = await process.spawn(argv, env, self.agent.cwd, files.log)
        except OSError as err:
            why = err.strerror or str(err)
            where = f" in {self.agent.cwd}" if self.agent.cwd else ""
            self.log.error("agent_start_failed", **self.fields, command=argv[0], error=why)
            return Outcome(
                FAILED,
                f"cannot start {argv[0]!r}{where} for agent {self.agent.name}: {why}",
                "fail",
            )
        self.log.info("agent_started", **self.fields, pid=proc.pid)
        try:
            claims.record_process(
                self.settings.task_dir, self.path, self.settings.runner_id, proc.pid, self.note
            )
            stopped = await self._watch(proc)
        finally:
            if proc.returncode is None:  # an error or a cancel from outside: never leave it
                await process.stop_group(proc, self.settings.kill_grace_seconds)
            process.reap_group(proc.pid)
        if stopped is not None:
            return stopped
        assert proc.returncode is not None
        result = ""
        try:
            result = files.result.read_text(errors="replace")
        except OSError:
            pass
        report = await asyncio.to_thread(self._read_output, offset)
        usage = self._usage_file() or report.usage
        last = process.tail(files.log, TAIL_LINES)
        return run_outcome(proc.returncode, self.agent.name, result, last, report, usage)

    def _read_output(self, offset: int) -> Report:
        """This run's output, read as the entry declares; one warning when it does not read."""
        reader = reader_for(self.agent.output, self.agent.prices)
        if reader is None:
            return Report()
        for line in process.output_lines(self.files.log, offset):
            reader.feed(line)
        report = reader.report()
        if report.problem is not None:
            self.log.warning(
                "agent_output_unread",
                **self.fields,
                output=self.agent.output,
                problem=report.problem,
                effect="no usage from the output",
            )
        return report

    def _usage_file(self) -> Usage | None:
        """What the agent wrote to TASK_USAGE_FILE: it wins over what its output says."""
        try:
            with self.files.usage.open("rb") as fh:
                raw = fh.read(MAX_USAGE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as err:
            self._usage_file_refused(err.strerror or str(err))
            return None
        try:
            return parse_usage(raw.decode("utf-8", errors="replace")) or None
        except UsageError as err:
            self._usage_file_refused(str(err))
            return None

    def _usage_file_refused(self, problem: str) -> None:
        self.log.warning(
            "usage_file_unread",
            **self.fields,
            usage_file=str(self.files.usage),
            problem=problem,
            effect="the output's usage, if any",
        )

    async def _watch(self, proc: asyncio.subprocess.Process) -> Outcome | None:
        """Heartbeat until the agent exits (None), or stop it and say why."""
        loop = asyncio.get_running_loop()
        interval = heartbeat_interval(self.task, self.settings.heartbeat_seconds)
        deadline = loop.time() + self.agent.timeout_seconds
        next_beat = loop.time()
        exited = asyncio.ensure_future(proc.wait())
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            while True:
                if loop.time() >= next_beat:
                    refused = await self._heartbeat(proc)
                    if refused is not None:
                        return refused
                    next_beat = loop.time() + interval
                timeout = max(0.0, min(next_beat, deadline) - loop.time())
                await asyncio.wait(
                    [exited, stopping], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if exited.done():
                    return None
                if stopping.done():
                    return await self._stop_for_shutdown(proc)
                if loop.time() >= deadline:
                    self.log.warning(
                        "agent_time_limit",
                        **self.fields,
                        timeout_seconds=self.agent.timeout_seconds,
                    )
                    await process.stop_group(proc, self.settings.kill_grace_seconds)
                    return Outcome(
                        FAILED,
                        f"agent {self.agent.name} ran past its time limit of "
                        f"{self.agent.timeout_seconds:g} s and was stopped",
                        "fail",
                    )
        finally:
            stopping.cancel()

    async def _heartbeat(self, proc: asyncio.subprocess.Process) -> Outcome | None:
        """One heartbeat with the last output line; an Outcome when the answer means stop."""
        last = process.tail(self.files.log, 1)
        try:
            await agent_calls.heartbeat(
                self.client, self.token, last[-1] if last else "", task_file=self.path
            )
        except agent_calls.AgentCallError as err:
            if err.code in (EXIT_STOP, EXIT_TOKEN):
                status = CANCELLED
            elif err.code == EXIT_USAGE:  # the server refuses the token
                status = FAILED
            else:  # unreachable or credentials: the next beat may land
                self.log.warning("heartbeat_failed", **self.fields, error=str(err))
                return None
            self.log.info("agent_stopping", **self.fields, reason=str(err))
            await process.stop_group(proc, self.settings.kill_grace_seconds)
            return Outcome(status, f"agent stopped: {err}", "none")
        return None

    async def _stop_for_shutdown(self, proc: asyncio.subprocess.Process) -> Outcome:
        self.log.info("agent_stopping", **self.fields, reason="runner stopping")
        await process.stop_group(proc, self.settings.kill_grace_seconds)
        if self.agent.rerun_on_restart:
            return Outcome(FAILED, "runner stopped; re-run at its next start", "leave")
        return Outcome(
            FAILED,
            f"agent runner {self.settings.runner_id} stopped while agent "
            f"{self.agent.name} ran; the agent was stopped",
            "fail",
        )
