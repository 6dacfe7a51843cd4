"""An operator's deploy, for tests/test_deploy_check.py: an upstream repository and the checkout
PM2 runs (a clone of it), a PM2 daemon of the test's own, and the documented shell blocks.

The upstream starts as this checkout's files (tracked and new, as they are on disk), so the test
deploys the code under test. The clone shares this checkout's `.venv`; its requirement files are
made older than the venv's stamp, so the documented `make venv` has nothing to install and never
touches the shared venv (`ensure_venv_current` fails the test before it could).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.env import ROOT, run_process

PM2 = ROOT / ".test-tools" / "pm2" / "node_modules" / ".bin" / "pm2"
APP = "temporal-build-worker"
GIT_USER = ("-c", "user.name=deploy test", "-c", "user.email=deploy@test.invalid")


def documented_block(doc: Path, name: str) -> str:
    """The ```sh block right after the line `<!-- operator: NAME -->` in `doc`."""
    text = doc.read_text(encoding="utf-8").splitlines()
    marker = f"<!-- operator: {name} -->"
    lines = [line.strip() for line in text]
    assert marker in lines, f"{doc.name} has no {marker}"
    start = lines.index(marker) + 1
    while not lines[start]:
        start += 1
    assert lines[start] == "```sh", f"{doc.name}: {marker} needs a ```sh block after it"
    end = lines.index("```", start + 1)
    return "\n".join(text[start + 1 : end]) + "\n"


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *GIT_USER, *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout.strip()


def upstream_and_checkout(tmp: Path) -> tuple[Path, Path]:
    """`tmp/upstream`, a repository of this checkout's files in one commit, and
    `tmp/checkout`, its clone with this checkout's `.venv`."""
    upstream, checkout = tmp / "upstream", tmp / "checkout"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (upstream / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, upstream / name)
    git(upstream, "init", "-q", "-b", "main")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "what runs today")
    git(tmp, "clone", "-q", str(upstream), str(checkout))
    (checkout / ".venv").symlink_to((ROOT / ".venv").resolve())
    with (checkout / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write("/.venv\n")
    return upstream, checkout


def ensure_venv_current(checkout: Path) -> None:
    """Dates the checkout's requirement files before the venv's stamp, and proves `make venv`
    then has nothing to do: the documented block must never reinstall the shared venv."""
    stamp = (checkout / ".venv" / ".installed").stat().st_mtime
    for name in ("requirements.txt", "requirements-dev.txt"):
        os.utime(checkout / name, (stamp - 3600, stamp - 3600))
    question = subprocess.run(["make", "-q", "venv"], cwd=checkout, capture_output=True)
    if question.returncode != 0:
        pytest.fail("`make venv` would install into the shared venv; refusing to run it")


def commit_change(upstream: Path, path: str, before: str, after: str, message: str) -> None:
    """Replace `before` (which must occur once) by `after` in `path` and commit it upstream."""
    file = upstream / path
    text = file.read_text()
    assert text.count(before) == 1, f"{path} no longer has the line the test changes"
    file.write_text(text.replace(before, after))
    git(upstream, "commit", "-q", "-am", message)


async def bash(script: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """`script` as a person pastes it into bash: (exit status, stdout, stderr)."""
    return await run_process(["bash", "-c", script], env, cwd, timeout=300)


@dataclass
class Pm2:
    """A PM2 daemon of the test's own (PM2_HOME under the test's directory)."""

    home: Path
    env: dict[str, str]

    async def run(self, *args: str, cwd: Path) -> str:
        code, out, err = await bash(" ".join([str(PM2), *args]), self.env, cwd)
        assert code == 0, (args, out, err)
        return out

    async def pid(self) -> int:
        """The worker's pid, as `pm2 jlist` reports it (0 while it is not running)."""
        apps: list[dict[str, Any]] = json.loads(await self.run("jlist", cwd=self.home))
        app = next(a for a in apps if a["name"] == APP)
        return int(app["pid"] or 0)

    def started(self) -> int:
        """How many times the worker has logged `worker_started` (PM2's log of its stdout)."""
        log = self.home / "logs" / f"{APP}-out.log"
        return log.read_text(errors="replace").count('"worker_started"') if log.exists() else 0


@contextlib.asynccontextmanager
async def pm2_daemon(tmp: Path, env: dict[str, str]) -> AsyncIterator[Pm2]:
    """PM2 with PM2_HOME in `tmp`, `env` its environment and the documented blocks'; `pm2 kill`
    afterwards, and SIGKILL to the daemon should that leave it running."""
    if not PM2.exists():
        pytest.fail(f"{PM2} is missing: `make test` installs pm2 there")
    home = tmp / "pm2"  # short: PM2's unix sockets live here
    home.mkdir()
    path = f"{PM2.parent}{os.pathsep}{env.get('PATH', os.defpath)}"
    pm2 = Pm2(home, {**env, "PM2_HOME": str(home), "PATH": path, "FORCE_COLOR": "0"})
    try:
        yield pm2
    finally:
        pids = []
        with contextlib.suppress(Exception):
            pids.append(await pm2.pid())
        pid_file = home / "pm2.pid"
        if pid_file.exists():
            pids.append(int(pid_file.read_text()))
        await bash(f"{PM2} kill", pm2.env, home)
        for pid in filter(None, pids):
            deadline = time.monotonic() + 20
            while _alive(pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
