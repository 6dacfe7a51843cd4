"""LOG_FORMAT: the same events as one-line JSON (for PM2 and programs) or readable console lines
(for a person at a terminal); LOG_FILE is JSON either way, and both are redacted.

The renderer and the field redaction are pure functions, tested directly; worker.py itself is
run with LOG_FORMAT=console against the session's dev server, and with a bad LOG_FORMAT.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from config import WorkerConfig
from harness.worker_process import WorkerProcess, worker_env
from observability.logs import console_renderer, resolve_format
from observability.redaction import REDACTED, redacted

EVENT = {
    "timestamp": "2026-12-01T23:00:00.000000Z",
    "level": "info",
    "event": "worker_started",
    "task_queue": "helm-build",
    "attempt": 2,
}


def render(**fields: object) -> str:
    event = {**EVENT, **fields}
    line = console_renderer()(None, "info", event)
    assert event == {**EVENT, **fields}  # the JSON rendering gets the same, untouched event
    return line


def test_console_line_reads_at_a_glance() -> None:
    line = render()
    assert line.startswith("2026-12-01T23:00:00.000000Z [info")
    assert "worker_started" in line
    assert "task_queue=helm-build" in line and "attempt=2" in line
    assert "\x1b[" not in line  # no colours unless asked for (a terminal)
    assert "\n" not in line


def test_console_escapes_control_characters() -> None:
    """A value cannot colour the terminal, move its cursor, or forge a second log line."""
    line = render(
        event="phase\x1b[2J failed\n",
        message="bad\x1b[2J\r\nworker_started forged",
        bell="\x07",
        quote="it's",
    )
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x07" not in line
    assert "phase\\x1b[2J failed\\n" in line
    assert "message='bad\\x1b[2J\\r\\nworker_started forged'" in line
    assert "bell='\\x07'" in line and 'quote="it\'s"' in line


def test_console_keeps_a_traceback_readable() -> None:
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: \x1bno'
    line = render(event="activity_failed", level="error", exception=trace)
    first, *rest = line.split("\n")
    assert "activity_failed" in first
    assert rest == [
        "Traceback (most recent call last):",
        '  File "x.py", line 1',
        "ValueError: \\x1bno",
    ]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_unset_format_follows_stdout() -> None:
    assert resolve_format(None, Terminal()) == "console"
    assert resolve_format(None, io.StringIO()) == "json"  # PM2, a pipe, a file
    assert resolve_format("json", Terminal()) == "json"
    assert resolve_format("console", io.StringIO()) == "console"


def test_redacted_fields() -> None:
    """Field redaction as the log bridge applies it to every SDK record, before rendering."""
    token_b64 = "CiQ" + "xYz09AbC" * 15
    fields = {
        "task_token": "anything at all",
        "core_fields": {"TaskToken": "x", "attempt": 2, "why": f"TaskToken({token_b64})"},
        "raw": b"\x0a\x24abc",
        "args": ("ok", f"heartbeat for {token_b64} failed", 3),
        "path": "/home/ops/.claude/task-queue/20261124-232137-b5d1cb43.yml",
    }
    out = {k: redacted(v, k) for k, v in fields.items()}
    assert out == {
        "task_token": REDACTED,
        "core_fields": {"TaskToken": REDACTED, "attempt": 2, "why": f"TaskToken({REDACTED})"},
        "raw": f"b'{REDACTED}'",
        "args": ["ok", f"heartbeat for {REDACTED} failed", 3],
        "path": fields["path"],
    }


async def test_worker_logs_for_a_person(config: WorkerConfig, tmp_path: Path) -> None:
    """worker.py with LOG_FORMAT=console: readable lines on stdout, not one JSON object, and
    LOG_FILE still JSON with the same events."""
    log_file = tmp_path / "worker.log"
    env = worker_env(config, LOG_FORMAT="console", LOG_FILE=str(log_file))
    worker = WorkerProcess(env, tmp_path / "logs")
    await worker.start(ready=" worker_started ")
    assert await worker.stop() == 0
    lines = worker.stdout.splitlines()
    [started] = [ln for ln in lines if " worker_started " in ln]
    assert "[info" in started and f"task_queue={config.task_queue}" in started
    for line in lines:
        with pytest.raises(ValueError):
            json.loads(line)
    events = [json.loads(ln)["event"] for ln in log_file.read_text().splitlines()]
    assert events[0] == "config_loaded" and "worker_started" in events
    assert "worker_stopped" in events and any(" worker_stopped" in ln for ln in lines)


async def test_bad_log_format_is_one_line(config: WorkerConfig, tmp_path: Path) -> None:
    env = worker_env(config, LOG_FORMAT="pretty")
    code, out, err = await WorkerProcess(env, tmp_path / "logs").run_to_exit()
    assert code == 2
    assert out == ""
    assert err.splitlines() == [
        "temporal-build-worker: ConfigError: LOG_FORMAT='pretty' is not one of console, json"
    ]
