"""complete_activity.py run as an agent runs it, as a subprocess."""

from __future__ import annotations

import asyncio
import sys

from harness.env import CLI, cli_env


async def run_cli(
    args: list[str], address: str, *, stdin: str | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run complete_activity.py as an agent would; returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        CLI,
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or cli_env(address),
        cwd="/",
    )
    out, err = await asyncio.wait_for(
        proc.communicate(stdin.encode() if stdin is not None else None), 60
    )
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
