"""Secrets stay out of logs, and the files that hold tokens are private.

Task tokens are bearer credentials: the Temporal SDK prints them in its DEBUG lines and Core in
its warnings, so observability.redaction redacts every SDK record (`redact_tokens`). Here a
worker runs at DEBUG over mTLS with its certificates from Vault (OpenBao), agents answer with
the real CLI (a Vault login each), a pipeline is approved and one rejected, and every byte of
every log is
searched for each task token (base64, bytes repr, protobuf text, JSON-escaped), the AppRole
secret id, each Vault token, and PEM material. The worker runs with umask 000, so the modes
checked at the end are the ones the code sets, not ones the umask happened to give.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.bridge.proto import ActivityTaskCompletion
from temporalio.client import Client, WorkflowHandle

from config import load_client_settings
from harness.agents import ScriptedAgent
from harness.env import ROOT, build_plan_input, make_config, start_plan
from harness.pipelines import PipelineScript, start_pipeline, summary_of, wait_stage
from harness.worker_process import WorkerProcess, debug_env
from models import BuildPlanResult, DecisionInput
from observability import REDACTED, redact_tokens
from temporal_connect import connect
from tests.helpers.figures import Figures
from tests.helpers.secrets import harvest_tokens, scan_for_secrets, token_forms
from tests.servers.tls import TlsRelay
from tests.servers.vault import Pki, VaultSetup, secrets_to_hide, vault_env

# --- The redaction, as a function ----------------------------------------------------------------


def realistic_token(
    namespace: str, workflow_id: str, run_id: str, activity: str, tail: bytes
) -> bytes:
    """Bytes laid out like a server's task token: ids as protobuf string fields, then varints."""

    def field(tag: int, data: bytes) -> bytes:
        return bytes([tag]) + bytes([len(data)]) + data

    return (
        field(0x0A, namespace.encode())
        + field(0x12, workflow_id.encode()[:100])
        + field(0x1A, run_id.encode())
        + b" \x06(\x012\x011"
        + field(0x42, activity.encode())
        + tail
    )


@settings(max_examples=200, deadline=None)
@given(
    namespace=st.uuids().map(str),
    workflow_id=st.text(min_size=1, max_size=60),
    run_id=st.uuids().map(str),
    activity=st.sampled_from(
        ["prefab_scaffolding", "wait_for_block_resolution", "execute_build_phase"]
    ),
    tail=st.binary(max_size=24),
)
def test_every_printed_form_of_a_token_is_redacted(
    namespace: str, workflow_id: str, run_id: str, activity: str, tail: bytes
) -> None:
    """The SDK's and Core's own sentences, with the token in each form they print it."""
    import base64

    token = realistic_token(namespace, workflow_id, run_id, activity, tail)
    completion = ActivityTaskCompletion(task_token=token)
    completion.result.will_complete_async.SetInParent()
    lines = [
        f"Running activity {activity} (token {token!r})",
        f"Completing activity with completion: {completion}",
        f"Cancelling activity {token!r}, reason: 2",
        f"Cannot find activity to cancel for token {token!r}",
        f"Activity not found on completion. task_token=TaskToken("
        f"{base64.b64encode(token).decode()})",
        f"heartbeat for {base64.b64encode(token).decode()} failed",
    ]
    for line in lines:
        redacted = redact_tokens(line)
        assert REDACTED in redacted
        for form in token_forms(token):
            if len(form) >= 16:
                assert form not in redacted, (line, redacted)
        rendered = json.dumps({"event": redacted})  # as the JSON log writes it
        assert not scan_for_secrets([rendered], [token]).hits


def test_ordinary_lines_are_left_alone() -> None:
    """Paths, ids, digests and JSON are what operators grep for: none of it is redacted."""
    lines = [
        "/home/ops/.claude/task-queue/20261124-232137-b5d1cb43.yml",
        "workflow_id=restart-gate-5eccfbaa run_id=01a20fdd-5dc9-7793-b381-0e8ee9893243",
        "sha256 " + "0123456789abcdef" * 4,
        "trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7",
        '{"status": "success", "output": "/tmp/closeout/report.md"}',
        "Beginning worker shutdown, will wait 0:00:10 before cancelling activities",
        "/srv/builds/" + "/".join(["artifacts"] * 12),
    ]
    for line in lines:
        assert redact_tokens(line) == line


CORE_LINE = """
import base64, logging, sys
from pathlib import Path
from types import SimpleNamespace

import observability

token = base64.b64encode(bytes(range(7, 140))).decode()
observability.configure_logging("DEBUG", Path(sys.argv[1]), sys.argv[2])
# A line as the SDK forwards it from Core: the token in a field and in the message
entry = SimpleNamespace(target="temporal_sdk_core::worker::activities",
                        fields={"task_token": f"TaskToken({token})", "attempt": 2})
logging.getLogger("temporalio.core").warning(
    f"Activity not found on completion. task_token=TaskToken({token})",
    extra={"temporal_log": entry})
print(token)
"""


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_core_token_field_is_redacted(tmp_path: Path, log_format: str) -> None:
    """Core's forwarded lines carry the token in their fields too: the log handler redacts
    the field and the message, before either rendering; LOG_FILE is JSON either way. (The
    end-to-end run below rarely provokes such a line.)"""
    log_file = tmp_path / "worker.log"
    out = subprocess.run(
        [sys.executable, "-c", CORE_LINE, str(log_file), log_format],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    *logged, token = out.strip().splitlines()
    [line] = [json.loads(ln) for ln in log_file.read_text().splitlines()]
    [shown] = logged
    if log_format == "json":
        assert json.loads(shown) == line
    else:
        assert not shown.startswith("{")
        assert "[warning" in shown and "Activity not found on completion" in shown
        assert "TaskToken(<redacted>)" in shown and "'task_token': '<redacted>'" in shown
    assert line["logger"] == "temporalio.core" and line["core_fields"]["attempt"] == 2
    assert line["core_fields"]["task_token"] == REDACTED
    assert "TaskToken(<redacted>)" in line["event"]
    assert not scan_for_secrets(
        [log_file.read_text(), out.replace(token, "")], [base64.b64decode(token)]
    ).hits


# --- A DEBUG worker over mTLS, end to end --------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _no_umask() -> None:  # runs in the worker's process before exec
    os.umask(0)


async def test_debug_logs_over_mtls_hold_no_secret(
    vault: VaultSetup, pki: Pki, relay: TlsRelay, tmp_path: Path, figures: Figures
) -> None:
    home = tmp_path / "home"
    base = make_config(tmp_path, relay.address, block_poll_seconds=0.5)
    env = debug_env(base, tmp_path / "logs", vault_env(vault, relay.address, home))
    agent_env = vault_env(vault, relay.address, tmp_path / "agent-home")
    scripts = {
        "approved": PipelineScript(flags=["rotate keys"], blocks=["open port"]),
        "rejected": PipelineScript(blocks=["secrets in the image"]),
    }
    names: dict[str, str] = {}

    def decide(task: dict[str, Any]) -> tuple[str, str]:
        name = names.get(task["payload"]["workflow_id"])
        if name is None:
            return ("success", "phase-done")
        answer = scripts[name].decide(task)
        assert answer is not None
        return answer

    worker = WorkerProcess(env, tmp_path / "logs", preexec=_no_umask, stop_signal=signal.SIGTERM)
    try:
        await worker.start()
        client: Client = await connect(load_client_settings(env))
        async with ScriptedAgent(
            base.agent_task_dir, relay.address, decide, env=agent_env, parallel=4
        ) as agent:
            handles: dict[str, WorkflowHandle] = {}
            for name in scripts:
                wf_id = f"secrets-{name}-{uuid.uuid4().hex[:8]}"
                names[wf_id] = name
                handles[name] = await start_pipeline(
                    client, base, f"origin-{name}", workflow_id=wf_id, build_name=name
                )
            plan = await start_plan(client, base.task_queue, build_plan_input("secrets"))
            for name, update in (("rejected", "reject"), ("approved", "approve")):
                handle = handles[name]
                await wait_stage(handle, "awaiting-approval", 60)
                await handle.execute_update(update, DecisionInput(by="dana"))
            results = {name: await h.result() for name, h in handles.items()}
            assert await plan.result() == BuildPlanResult(status="complete", phases_run=1)
        # Stopped as systemd stops it: a graceful shutdown, whose lines are scanned too.
        assert await worker.stop() == 0
    finally:
        await worker.stop()

    assert agent.errors == [] and set(agent.codes) == {0}
    assert summary_of(results["approved"].summary_path)["outcome"] == "partial"
    assert summary_of(results["rejected"].summary_path)["outcome"] == "rejected"

    # The SDK's token-bearing lines were written, and written redacted: the scan below is
    # looking at real DEBUG output, not at silence.
    log_text = Path(env["LOG_FILE"]).read_text()
    running = log_text.count(f"(token b'{REDACTED}')")
    completing = log_text.count(f'task_token: \\"{REDACTED}\\"')
    core_lines = _core_token_lines(worker)
    assert running >= 10 and completing >= 10, (running, completing)
    # Core logs a token-bearing line only on rare paths (test_core_token_field_is_redacted
    # proves the redaction); any it did log here must be redacted too.
    assert all(e["core_fields"]["task_token"] == REDACTED for e in core_lines), core_lines

    texts = worker.outputs() + agent.outputs
    tokens = harvest_tokens(base.agent_task_dir)
    scan = scan_for_secrets(texts, tokens, secrets_to_hide(vault, pki))
    assert scan.hits == [], scan.hits[:5]
    assert len(tokens) == 1 + 5 + 4 - 1  # plan, approved (5 stages), rejected (no close)

    # Modes set by the code (the worker's umask was 000).
    queue = base.agent_task_dir
    task_modes = {_mode(p) for p in queue.glob("*.yml")}
    request = base.audit_dir / "approved" / "request.md"
    summaries = list(base.summary_dir.rglob("*.yml"))
    assert _mode(queue) == 0o700 and task_modes == {0o600}
    assert _mode(base.audit_dir / "approved") == 0o700 and _mode(request) == 0o640
    assert {_mode(p.parent) for p in summaries} == {0o700}
    assert {_mode(p) for p in summaries} == {0o640} and len(summaries) == 2
    assert _mode(Path(env["LOG_FILE"])) == 0o600

    figures.record(
        "secrets", "DEBUG log scan: texts / MB", f"{scan.texts} / {scan.chars / 1e6:.1f}"
    )
    figures.record("secrets", "needles: token forms + Vault ids, tokens, PEM lines", scan.needles)
    figures.record("secrets", "hits", len(scan.hits))
    figures.record(
        "secrets",
        "redacted SDK lines: Running / Completing / Core",
        f"{running} / {completing} / {len(core_lines)}",
    )
    figures.record(
        "secrets",
        "modes: queue dir / task / request.md / summary / log",
        "0700 / 0600 / 0640 / 0640 / 0600 (umask 000)",
    )


def _core_token_lines(worker: WorkerProcess) -> list[dict[str, Any]]:
    """Core's forwarded log lines that carried a task token field."""
    return [
        e
        for e in worker.events()
        if e.get("logger") == "temporalio.core" and "task_token" in (e.get("core_fields") or {})
    ]
