"""The runner's loop: claim submitted tasks within the limits, supervise each agent, report.

What happens to a task, by case (docs/OPERATIONS.md repeats this for operators):
- agent exits 0: the stage completes `success` (result file text, else the output's final text
  for a JSON `output`, else last output line); the file becomes `completed`;
- a claude-json error result (`is_error: true`), whatever the exit status: the stage is failed
  with its `subtype`; the file becomes `failed`;
- non-zero exit, a command that cannot start, the time limit, a runner stop or restart while
  the agent ran (without `rerun_on_restart`): the stage is failed with one line saying which;
  the file becomes `failed`;
- the heartbeat says stop (exit 6: cancelled or superseded) or the token is dead (exit 4):
  the agent's group is stopped, nothing is delivered, the file becomes `cancelled`;
- the server refuses the token (exit 1): the group is stopped, the file becomes `failed`;
- a task with no usable token: the file becomes `failed` (there is no stage to tell);
- a malformed file: one log line, the file is left untouched.
The usage of a run that ended by itself (TASK_USAGE_FILE, else its output) goes with its
`success` or `failed`.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from temporalio.client import Client

import agent_calls
from activities.task_files import FAILED, ensure_private_dir
from exceptions import TaskFileError
from program_exit import EXIT_UNREACHABLE
from runner import claims, process
from runner.config import AgentCommand, RunnerSettings
from runner.outcomes import Outcome, token_of
from runner.supervise import AgentRun, RunFiles
from runner.watch import RESCAN_SECONDS, wake_on_changes

DELIVERY_RETRY_SECONDS = (1, 2, 4, 8, 15, 30, 30, 30)  # Temporal unreachable: ~2 min in all


class Runner:
    def __init__(
        self,
        settings: RunnerSettings,
        agents: Mapping[str, AgentCommand],
        client: Client,
        log: Any,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.agents = dict(agents)
        self.client = client
        self.log = log
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.stop = asyncio.Event()
        self.wake = asyncio.Event()
        self.running: dict[str, asyncio.Task[None]] = {}
        self.per_agent: Counter[str] = Counter()
        self.scanner = claims.Scanner(frozenset(self.agents), self._report_malformed)

    def _report_malformed(self, path: Path, problem: str) -> None:
        self.log.warning(
            "task_file_malformed", task_file=str(path), error=problem, effect="left untouched"
        )

    def _files(self, path: Path) -> RunFiles:
        return RunFiles.of(self.settings.log_dir, path)

    async def run(self) -> None:
        """Until `stop` is set; then agents are stopped as `shutdown` describes."""
        ensure_private_dir(self.settings.task_dir)
        ensure_private_dir(self.settings.log_dir)
        lock = claims.hold_identity(self.settings.task_dir, self.settings.runner_id)
        try:
            self.recover()
            watcher = asyncio.create_task(
                wake_on_changes(self.settings.task_dir, self.wake, self.stop, self.log)
            )
            self.log.info(
                "runner_started",
                runner_id=self.settings.runner_id,
                task_dir=str(self.settings.task_dir),
                agents=sorted(self.agents),
                concurrency=self.settings.global_concurrency,
            )
            while not self.stop.is_set():
                self.wake.clear()
                self.schedule()
                waits = [asyncio.ensure_future(e.wait()) for e in (self.wake, self.stop)]
                await asyncio.wait(
                    waits, timeout=RESCAN_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                for waiting in waits:
                    waiting.cancel()
            await self.shutdown()
            await watcher
        finally:
            os.close(lock)
        self.log.info("runner_stopped", runner_id=self.settings.runner_id)

    def schedule(self) -> None:
        for path, task in self.scanner.candidates(self.settings.task_dir):
            if len(self.running) >= self.settings.global_concurrency:
                return
            agent = self.agents[str(task["target_agent"])]
            if self.per_agent[agent.name] >= agent.concurrency or path.name in self.running:
                continue
            self._take(path, task, agent)

    def _take(self, path: Path, task: dict[str, Any], agent: AgentCommand) -> None:
        fields = {"task_file": str(path), "agent": agent.name, "task_id": task.get("id")}
        token = token_of(task)
        try:
            if token is None:
                self.log.error("task_without_token", **fields, effect="marked failed")
                claims.mark(
                    self.settings.task_dir,
                    path,
                    self.settings.runner_id,
                    FAILED,
                    "no usable payload.task_token: the runner cannot report this task",
                )
                return
            log_file = self._files(path).log
            claimed = claims.claim(
                self.settings.task_dir,
                path,
                self.settings.runner_id,
                log_file,
                f"claimed by agent runner for agent {agent.name}",
            )
        except TaskFileError as err:
            self.log.error("task_file_error", **fields, error=str(err))
            return
        if claimed is None:
            self.log.debug("task_claim_lost", **fields)
            return
        self.log.info(
            "task_claimed",
            **fields,
            log_file=str(log_file),
            workflow_id=claimed["payload"].get("workflow_id"),
        )
        self._start(path, claimed, agent, token, "")

    def _start(
        self, path: Path, task: dict[str, Any], agent: AgentCommand, token: bytes, note: str
    ) -> None:
        self.per_agent[agent.name] += 1
        job = asyncio.create_task(self._supervise(path, task, agent, token, note))
        self.running[path.name] = job

        def done(_: object) -> None:
            self.running.pop(path.name, None)
            self.per_agent[agent.name] -= 1
            self.wake.set()  # a slot is free

        job.add_done_callback(done)

    async def _supervise(
        self, path: Path, task: dict[str, Any], agent: AgentCommand, token: bytes, note: str
    ) -> None:
        fields = {"task_file": str(path), "agent": agent.name, "task_id": task.get("id")}
        run = AgentRun(
            self.settings,
            self.client,
            self.log,
            self.base_env,
            self.stop,
            path,
            task,
            agent,
            token,
            note,
            self._files(path),
            fields,
        )
        try:
            outcome = await run.run()
        except Exception as err:  # noqa: BLE001 - the stage must hear of it, the runner go on
            self.log.error("runner_error", **fields, error=f"{type(err).__name__}: {err}")
            outcome = Outcome(FAILED, f"agent runner error: {type(err).__name__}: {err}", "fail")
        await self.conclude(path, token, outcome, fields)

    async def conclude(
        self, path: Path, token: bytes, outcome: Outcome, fields: dict[str, Any]
    ) -> None:
        """Deliver the outcome to the stage (retrying while Temporal is unreachable), then
        record it in the task file."""
        if outcome.deliver == "leave":
            self.log.info("task_left_for_restart", **fields)
            return
        note = outcome.note
        if outcome.deliver in ("complete", "fail"):
            for pause in (*DELIVERY_RETRY_SECONDS, None):
                try:
                    if outcome.deliver == "complete":
                        await agent_calls.complete(
                            self.client, token, outcome.output or "", outcome.usage
                        )
                    else:
                        await agent_calls.fail(self.client, token, outcome.note, outcome.usage)
                    break
                except agent_calls.AgentCallError as err:
                    # stopping: PM2's kill_timeout leaves no time for the retries
                    if err.code != EXIT_UNREACHABLE or pause is None or self.stop.is_set():
                        self.log.error("delivery_failed", **fields, error=str(err))
                        note = f"{note} (not delivered: {err})"
                        break
                    self.log.warning("delivery_retry", **fields, error=str(err), pause_s=pause)
                    await asyncio.sleep(pause)
        try:
            claims.finish(
                self.settings.task_dir,
                path,
                self.settings.runner_id,
                outcome.status,
                note,
                outcome.output,
            )
        except TaskFileError as err:
            self.log.error("task_file_error", **fields, error=str(err))
        self.log.info(
            "task_finished", **fields, status=outcome.status, note=note[:500], usage=outcome.usage
        )

    def recover(self) -> None:
        """This runner's `in-progress` tasks from an earlier run: their agent is gone."""
        for path, task in claims.own_in_progress(self.settings.task_dir, self.settings.runner_id):
            fields = {
                "task_file": str(path),
                "agent": task.get("target_agent"),
                "task_id": task.get("id"),
            }
            try:
                self._recover_one(path, task, fields)
            except TaskFileError as err:
                self.log.error("task_file_error", **fields, error=str(err))

    def _recover_one(self, path: Path, task: dict[str, Any], fields: dict[str, Any]) -> None:
        info = task[claims.RUNNER_KEY]
        if isinstance(info.get("pid"), int):
            # TASK_FILE names the agent's copy; an older runner's agent, the queued file
            left = process.stop_leftovers(info["pid"], self._files(path).task, path)
            if left:
                self.log.warning("agent_leftovers_killed", **fields, processes=left)
        agent = self.agents.get(str(task.get("target_agent")))
        token = token_of(task)
        if token is None:
            claims.finish(
                self.settings.task_dir,
                path,
                self.settings.runner_id,
                FAILED,
                "no usable payload.task_token after a runner restart",
            )
            return
        if agent is not None and agent.rerun_on_restart:
            self.log.info("task_rerun", **fields)
            self._start(path, task, agent, token, "re-run after an agent runner restart")
            return
        self.log.warning("task_orphaned", **fields, effect="stage failed")
        outcome = Outcome(
            FAILED,
            f"agent runner {self.settings.runner_id} restarted while "
            f"agent {task.get('target_agent')} ran this task; its process is "
            "gone (set rerun_on_restart: true to run it again)",
            "fail",
        )
        key = f"recover:{path.name}"
        self.running[key] = asyncio.create_task(self.conclude(path, token, outcome, fields))
        self.running[key].add_done_callback(self._forget(key))

    def _forget(self, key: str) -> Callable[[object], None]:
        def forget(_: object) -> None:
            self.running.pop(key, None)

        return forget

    async def shutdown(self) -> None:
        """`stop` is set: every supervisor stops its agent (`_stop_for_shutdown`) and reports."""
        jobs = list(self.running.values())
        if jobs:
            self.log.info("runner_stopping", agents_running=len(jobs))
            await asyncio.gather(*jobs, return_exceptions=True)
