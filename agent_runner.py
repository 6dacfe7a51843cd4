#!/usr/bin/env python3
"""temporal-build-agent-runner: runs a command-line agent for each task file it can serve.

Reads AGENT_COMMANDS_FILE (which agent runs how), watches AGENT_TASK_DIR, and for each new
`submitted` task of a configured agent claims it, runs the agent, heartbeats its stage and
completes it. Other agents' tasks are left to other dispatchers. See docs/OPERATIONS.md.

Exit codes: 0 stopped by SIGINT/SIGTERM; 1 an unexpected error (one line); 2 a bad setting,
AGENT_COMMANDS_FILE, or a runner with this AGENT_RUNNER_ID already running (one line on stderr);
3 Temporal unreachable at start.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid

import structlog

import observability
from config import home_dir, load_client_settings
from exceptions import ConfigError, CredentialError, TaskFileError, TemporalUnreachableError
from program_exit import exit_code, leave
from runner.config import load_commands, load_settings
from runner.service import Runner
from temporal_connect import connect

log = structlog.get_logger("agent_runner")


async def main_async() -> None:
    settings = load_settings()
    observability.configure_logging(
        settings.log_level,
        log_format=settings.log_format,
        runner_id=settings.runner_id,
        runner_run=str(uuid.uuid4()),
    )
    agents = load_commands(settings.commands_file, home_dir(os.environ))
    log.info(
        "runner_config_loaded",
        commands_file=str(settings.commands_file),
        agents=sorted(agents),
        task_dir=str(settings.task_dir),
        log_dir=str(settings.log_dir),
        heartbeat_seconds=settings.heartbeat_seconds,
    )
    try:
        client = await connect(load_client_settings(), identity=settings.runner_id)
    except TemporalUnreachableError as err:
        log.error("temporal_unreachable", error=str(err))
        raise
    runner = Runner(settings, agents, client, log)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runner.stop.set)
    await runner.run()


def main() -> int:
    return exit_code(
        "agent_runner",
        lambda: asyncio.run(main_async()),
        (ConfigError, CredentialError, TaskFileError),
    )


if __name__ == "__main__":
    try:
        code = main()
    except Exception as err:  # noqa: BLE001 - one line, never a traceback; PM2 restarts it
        print(f"agent_runner: unexpected {type(err).__name__}: {err}", file=sys.stderr)
        code = 1
    leave(code)
