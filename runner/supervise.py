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
from activities.task_files import CANCELLED, FAILED
from program_exit import EXIT_STOP, EXIT_TOKEN, EXIT_USAGE
from runner import claims, process
from runner.agent_env import agent_environment, expand_command
from runner.config import AgentCommand, RunnerSettings
from runner.outcomes import Outcome, exit_outcome, heartbeat_interval

TAIL_LINES = 20


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
    log_file: Path
    result_file: Path
    fields: dict[str, Any]

    async def run(self) -> Outcome:
        self.result_file.unlink(missing_ok=True)
        env = agent_environment(
            self.base_env, self.task, self.path, self.result_file, self.agent.env
        )
        argv = expand_command(self.agent.command, env)
        process.note_in_log(self.log_file, f"[agent-runner] {self.note or 'starting'}: {argv[0]}")
        try:
            proc = await process.spawn(argv, env, self.agent.cwd, self.log_file)
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
            result = self.result_file.read_text(errors="replace")
        except OSError:
            pass
        last = process.tail(self.log_file, TAIL_LINES)
        return exit_outcome(proc.returncode, self.agent.name, result, last)

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
        last = process.tail(self.log_file, 1)
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
