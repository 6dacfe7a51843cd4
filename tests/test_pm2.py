"""The worker under the real PM2 (npm's `pm2`, installed by `make test` into .test-tools/pm2).

Each test gets its own PM2 daemon (PM2_HOME in a temporary directory) that runs this checkout's
`ecosystem.config.js` exactly as an operator would, and is always killed afterwards. The worker
talks to the session's dev server; work is proved by task files appearing and plans completing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

import worker as worker_module
from harness.cli import run_cli
from harness.env import ROOT, build_plan_input, start_plan
from models import BuildPlanResult
from runner.config import DEFAULT_KILL_GRACE_SECONDS
from tests.helpers.checks import task_files_in, wait_for

PM2 = ROOT / ".test-tools" / "pm2" / "node_modules" / ".bin" / "pm2"
ECOSYSTEM = ROOT / "ecosystem.config.js"
APP = "temporal-build-worker"
RUNNER_APP = "temporal-build-agent-runner"


@dataclass
class Pm2:
    """One PM2 daemon of our own, driven through the `pm2` command line."""

    home: Path
    env: dict[str, str]
    queue_dir: Path
    task_queue: str

    async def run(self, *args: str, check: bool = True) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(PM2),
            *args,
            env=self.env,
            cwd=self.home,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        text = out.decode(errors="replace")
        if check and proc.returncode != 0:
            raise AssertionError(f"pm2 {' '.join(args)} exited {proc.returncode}:\n{text}")
        return text

    async def app(self, name: str = APP) -> dict[str, Any] | None:
        """Our app as `pm2 jlist` reports it, or None when PM2 does not know it."""
        apps = json.loads(await self.run("jlist"))
        return next((a for a in apps if a["name"] == name), None)

    async def wait_app(
        self, timeout: float = 60, app_name: str = APP, **want: Any
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            app = await self.app(app_name)
            if app is not None and all(_field(app, k) == v for k, v in want.items()):
                return app
            if time.monotonic() > deadline:
                raise AssertionError(f"{app_name} never reached {want}; last: {_summary(app)}")
            await asyncio.sleep(0.2)

    def out_log(self, app: str = APP) -> Path:
        return self.home / "logs" / f"{app}-out.log"

    def events(self, name: str, app: str = APP) -> list[dict[str, Any]]:
        """The app's JSON log events called `name`, from PM2's log of its stdout."""
        found = []
        if self.out_log(app).exists():
            for line in self.out_log(app).read_text(errors="replace").splitlines():
                start = line.find("{")  # after log_date_format's time stamp
                if start < 0:
                    continue
                with contextlib.suppress(ValueError):
                    event = json.loads(line[start:])
                    if isinstance(event, dict) and event.get("event") == name:
                        found.append(event)
        return found

    def daemon_log(self) -> str:
        path = self.home / "pm2.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _field(app: dict[str, Any], key: str) -> Any:
    return app["pid"] if key == "pid" else app["pm2_env"].get(key)


def _summary(app: dict[str, Any] | None) -> str:
    if app is None:
        return "not listed"
    env = app["pm2_env"]
    return f"status={env.get('status')} pid={app['pid']} restarts={env.get('restart_time')}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def worker_env(tmp: Path, pm2_home: Path, address: str, task_queue: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VAULT_", "OTEL_", "PM2_", "MATRIX_", "TEMPORAL_", "LOG_", "AGENT_"))
    }
    env.update(
        PM2_HOME=str(pm2_home),
        TEMPORAL_ADDRESS=address,
        TASK_QUEUE=task_queue,
        AGENT_TASK_DIR=str(tmp / "task-queue"),
        TEMPORAL_AUDIT_DIR=str(tmp / "artifacts"),
        TEMPORAL_SUMMARY_DIR=str(tmp / "workflows"),
        SEND_MATRIX_SCRIPT=str(tmp / "send-matrix.sh"),
        FORCE_COLOR="0",
    )
    return env


@contextlib.asynccontextmanager
async def pm2_daemon(tmp: Path, address: str) -> AsyncIterator[Pm2]:
    """A PM2 daemon of our own; `pm2 kill` (and, failing that, SIGKILL by pid) afterwards."""
    if not PM2.exists():
        pytest.fail(f"{PM2} is missing: `make test` installs pm2 there")
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.fail("ecosystem.config.js runs .venv/bin/python: run `make venv`")
    home = tmp / "pm2"  # short: PM2's unix sockets live here
    home.mkdir()
    task_queue = f"pm2-{uuid.uuid4().hex[:12]}"
    pm2 = Pm2(home, worker_env(tmp, home, address, task_queue), tmp / "task-queue", task_queue)
    worker_pids: set[int] = set()
    try:
        yield pm2
    finally:
        with contextlib.suppress(Exception):
            app = await pm2.app()
            if app and app["pid"]:
                worker_pids.add(int(app["pid"]))
        daemon_pid_file = home / "pm2.pid"
        daemon_pid = int(daemon_pid_file.read_text()) if daemon_pid_file.exists() else None
        with contextlib.suppress(Exception):
            await pm2.run("kill", check=False)
        for pid in [*worker_pids, *([daemon_pid] if daemon_pid else [])]:
            deadline = time.monotonic() + 20
            while _alive(pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


TWO_PHASES = build_plan_input("pm2-plan", 2)


async def complete_task(pm2: Pm2, address: str, index: int) -> None:
    """Wait for the plan's task file number `index` (1-based) and complete it as an agent."""
    await wait_for(lambda: len(task_files_in(pm2.queue_dir)) >= index, timeout=60)
    path = sorted(task_files_in(pm2.queue_dir), key=lambda p: p.stat().st_mtime)[index - 1]
    code, _, err = await run_cli(["--task-file", str(path), "success", "done"], address)
    assert code == 0, err


def ecosystem_apps(extra_env: dict[str, str]) -> list[dict[str, Any]]:
    """The apps PM2 reads from ecosystem.config.js, for `pm2 start` run with `extra_env`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    loaded = json.loads(
        subprocess.run(
            ["node", "-e", f"console.log(JSON.stringify(require({json.dumps(str(ECOSYSTEM))})))"],
            check=True,
            capture_output=True,
            text=True,
            env={**env, **extra_env},
        ).stdout
    )
    return list(loaded["apps"])


def test_ecosystem_file() -> None:
    """What PM2 reads: documented keys, paths relative to the file, nothing personal."""
    text = ECOSYSTEM.read_text()
    assert "/home/" not in text and "exp_backoff_restart_delay_ms" not in text
    [app] = ecosystem_apps({})
    assert app["name"] == APP and app["script"] == "worker.py"
    assert app["interpreter"] == str(ROOT / ".venv" / "bin" / "python")
    assert app["cwd"] == str(ROOT)
    assert app["autorestart"] is True and app["max_restarts"] == 10
    assert app["exp_backoff_restart_delay"] > 0
    assert app["kill_timeout"] > worker_module.GRACEFUL_SHUTDOWN.total_seconds() * 1000
    assert app["log_date_format"]
    assert app["env"] == {"PYTHONUNBUFFERED": "1", "MATRIX_ROOM": "sysadmin"}


async def test_start_crash_restart_stop_delete(
    tmp_path: Path, client: Client, address: str
) -> None:
    async with pm2_daemon(tmp_path, address) as pm2:
        # start: online, polling our task queue
        await pm2.run("start", str(ECOSYSTEM))
        first = await pm2.wait_app(status="online")
        first_pid = int(first["pid"])
        assert first["pm2_env"]["pm_exec_path"] == str(ROOT / "worker.py")
        await wait_for(lambda: len(pm2.events("worker_started")) == 1, timeout=60)
        assert pm2.events("worker_started")[0]["task_queue"] == pm2.task_queue

        handle = await start_plan(client, pm2.task_queue, TWO_PHASES)
        await wait_for(lambda: len(task_files_in(pm2.queue_dir)) == 1, timeout=60)

        # kill -9: PM2 restarts it after the backoff delay, as a new process
        os.kill(first_pid, signal.SIGKILL)
        second = await pm2.wait_app(status="online", restart_time=1)
        second_pid = int(second["pid"])
        assert second_pid != first_pid and not _alive(first_pid)
        await wait_for(lambda: len(pm2.events("worker_started")) == 2, timeout=60)
        assert "will restart in 500ms" in pm2.daemon_log()

        # the new process carries the plan on: phase 2 is dispatched by it, and the plan completes
        await complete_task(pm2, address, 1)
        await complete_task(pm2, address, 2)
        result = await asyncio.wait_for(handle.result(), 60)
        assert result == BuildPlanResult(status="complete", phases_run=2)

        # pm2 stop: SIGINT, the worker drains and logs worker_stopped well before kill_timeout
        stop_started = time.monotonic()
        await pm2.run("stop", APP)
        stopped = await pm2.wait_app(status="stopped")
        assert time.monotonic() - stop_started < 15
        assert not _alive(second_pid)
        await wait_for(lambda: len(pm2.events("worker_stopped")) == 1, timeout=10)
        assert len(pm2.events("worker_stopping")) == 1
        assert "still alive after" not in pm2.daemon_log()  # no SIGKILL escalation
        assert "exited with code [0] via signal [SIGINT]" in pm2.daemon_log()
        assert stopped["pm2_env"]["restart_time"] == 1  # a stop is not a crash

        # pm2 delete: PM2 forgets the app
        await pm2.run("delete", APP)
        assert await pm2.app() is None
        assert json.loads(await pm2.run("jlist")) == []


@pytest.mark.slow
async def test_temporal_down_at_boot_is_retried_until_it_comes_back(
    tmp_path: Path, client: Client, address: str
) -> None:
    """An outage at boot is retried with backoff until Temporal answers: never `errored`.

    A TCP relay stands in for the Temporal frontend: closed (connection refused) for the first
    12 s, past PM2's 10 s window for unstable restarts, then relaying to the dev server.
    """
    host, _, port = address.rpartition(":")

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(port))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    probe = await asyncio.start_server(relay, "127.0.0.1", 0)
    relay_port = probe.sockets[0].getsockname()[1]
    probe.close()  # nothing listens there now: Temporal is "down"
    await probe.wait_closed()

    async with pm2_daemon(tmp_path, f"127.0.0.1:{relay_port}") as pm2:
        await pm2.run("start", str(ECOSYSTEM))
        statuses: set[str] = set()
        outage_end = time.monotonic() + 12
        while time.monotonic() < outage_end:
            app = await pm2.app()
            assert app is not None
            statuses.add(app["pm2_env"]["status"])
            await asyncio.sleep(0.3)
        during = await pm2.app()
        assert during is not None and "errored" not in statuses
        assert during["pm2_env"]["restart_time"] >= 4
        delays = [
            int(line.rsplit(" ", 1)[1].removesuffix("ms"))
            for line in pm2.daemon_log().splitlines()
            if "will restart in" in line
        ]
        assert delays[:4] == [500, 750, 1125, 1687]  # backing off, not hammering

        server = await asyncio.start_server(relay, "127.0.0.1", relay_port)
        try:
            # the next scheduled restart (at most 15 s away) connects and stays up
            await wait_for(lambda: len(pm2.events("worker_started")) == 1, timeout=40)
            await pm2.wait_app(status="online")
            handle = await start_plan(client, pm2.task_queue, TWO_PHASES)
            await wait_for(lambda: len(task_files_in(pm2.queue_dir)) == 1, timeout=60)
            await handle.terminate("test over")
            await pm2.run("delete", APP)
        finally:
            server.close()
            await server.wait_closed()


def test_ecosystem_adds_the_agent_runner_when_agent_commands_file_is_set() -> None:
    worker_app, runner = ecosystem_apps({"AGENT_COMMANDS_FILE": "/etc/agents.yml"})
    assert worker_app == ecosystem_apps({})[0]
    assert runner["name"] == RUNNER_APP and runner["script"] == "agent_runner.py"
    assert runner["interpreter"] == worker_app["interpreter"] and runner["cwd"] == str(ROOT)
    assert runner["autorestart"] is True and runner["treekill"] is False
    # SIGTERM, the kill grace, then the stages told: well inside PM2's SIGKILL
    assert runner["kill_timeout"] >= DEFAULT_KILL_GRACE_SECONDS * 1000 + 15000
    assert runner["env"] == {"PYTHONUNBUFFERED": "1"}


async def test_the_runner_app_runs_a_plan_under_pm2(
    tmp_path: Path, client: Client, address: str
) -> None:
    commands = tmp_path / "agents.yml"
    commands.write_text("dev: {command: [echo, phase done]}\n")
    async with pm2_daemon(tmp_path, address) as pm2:
        pm2.env.update(AGENT_COMMANDS_FILE=str(commands), AGENT_RUNNER_ID="pm2-runner")
        await pm2.run("start", str(ECOSYSTEM))
        await pm2.wait_app(status="online")
        await pm2.wait_app(app_name=RUNNER_APP, status="online")
        await wait_for(lambda: len(pm2.events("runner_started", RUNNER_APP)) == 1, timeout=60)
        handle = await start_plan(client, pm2.task_queue, TWO_PHASES)
        result = await asyncio.wait_for(handle.result(), 60)
        assert result == BuildPlanResult(status="complete", phases_run=2)
        # the stage is told first, then the runner writes the file and logs it
        await wait_for(lambda: len(pm2.events("task_finished", RUNNER_APP)) == 2, timeout=10)
        await pm2.run("stop", RUNNER_APP)
        await pm2.wait_app(app_name=RUNNER_APP, status="stopped")
        await wait_for(lambda: len(pm2.events("runner_stopped", RUNNER_APP)) == 1, timeout=10)
