"""The task-file protocol: what agents and the dispatcher read.

Unit tests on real files in a temporary directory; no Temporal server is needed here.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activities import gate_files, task_files
from exceptions import TaskFileError
from harness.env import ROOT
from tests.helpers.queue import leftovers
from tests.helpers.tasks import NOW, SPEC_KEYS, TASK_ID, TOKEN, make_task

pytestmark = pytest.mark.unit


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- Building the task mapping ---------------------------------------------------------------


def test_task_keys_and_fixed_values() -> None:
    task = make_task(payload={"plan_name": "demo", "phase_number": 1})
    assert set(task) == SPEC_KEYS
    assert task["id"] == TASK_ID
    assert task["created"] == "2026-06-01T12:00:00.123456+00:00"
    assert task["source_agent"] == "temporal-worker"
    assert task["target_agent"] == "dev"
    assert task["task_type"] == "build_phase"
    assert task["risk_level"] == "low"
    assert task["requires_approval"] is False
    assert task["status"] == "submitted"
    assert task["ttl_days"] == 7
    assert task["result"] == {"output": None, "completed_by": None, "completed_at": None}
    assert task["payload"] == {"plan_name": "demo", "phase_number": 1, "task_token": TOKEN}


def test_one_history_entry_with_summary_or_given_note() -> None:
    entry = {
        "timestamp": "2026-06-01T12:00:00.123456+00:00",
        "status": "submitted",
        "actor": "temporal-worker",
    }
    assert make_task(summary="Do it")["history"] == [{**entry, "note": "Do it"}]
    assert make_task(history_note="Phase 1 dispatched by BuildPlanWorkflow")["history"] == [
        {**entry, "note": "Phase 1 dispatched by BuildPlanWorkflow"}
    ]


def test_task_token_wins_over_payload_key() -> None:
    task = make_task(payload={"task_token": "forged", "x": 1})
    assert task["payload"] == {"x": 1, "task_token": TOKEN}


def test_encode_token_is_standard_base64() -> None:
    assert task_files.encode_token(b"\xfb\xff\xfe") == "+//+"
    assert task_files.encode_token(b"ab") == "YWI="


# --- Writing ---------------------------------------------------------------------------------


def test_written_file_name_mode_and_content(tmp_path: Path) -> None:
    queue = tmp_path / "nested" / "task-queue"
    path = task_files.write_task(queue, make_task(), NOW)
    assert path == queue / "20260601-120000-3f2a9c1b.yml"
    assert mode_of(path) == 0o600
    assert mode_of(queue) == 0o700
    assert leftovers(queue) == []
    assert [p.name for p in queue.iterdir()] == [path.name]
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert loaded == make_task()
    assert isinstance(loaded["created"], str)  # quoted, not a YAML timestamp


def test_file_is_block_style_with_sorted_keys(tmp_path: Path) -> None:
    path = task_files.write_task(tmp_path, make_task(), NOW)
    top = [
        line.split(":")[0]
        for line in path.read_text().splitlines()
        if line and not line.startswith((" ", "-"))
    ]
    assert top == sorted(SPEC_KEYS)
    assert "{" not in path.read_text()


def test_mode_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = task_files.write_task(tmp_path / "q", make_task(), NOW)
    finally:
        os.umask(old)
    assert mode_of(path) == 0o600
    assert mode_of(tmp_path / "q") == 0o700


def test_existing_queue_dir_mode_is_left_alone(tmp_path: Path) -> None:
    queue = tmp_path / "q"
    queue.mkdir(mode=0o750)
    queue.chmod(0o750)
    task_files.write_task(queue, make_task(), NOW)
    assert mode_of(queue) == 0o750


def test_stale_tmp_from_a_crash_does_not_leak_its_mode(tmp_path: Path) -> None:
    """A leftover `.tmp` from a crash keeps its old mode under O_CREAT; the write resets it."""
    target = tmp_path / task_files.task_filename(NOW, TASK_ID)
    stale = tmp_path / (target.name + ".tmp")
    stale.write_text("half a file")
    stale.chmod(0o644)
    path = task_files.write_task(tmp_path, make_task(), NOW)
    assert mode_of(path) == 0o600
    assert leftovers(tmp_path) == []


READ_ONLY_WRITE = """
import sys
from pathlib import Path
from activities import task_files
from exceptions import TaskFileError
from tests.helpers.tasks import NOW, make_task
try:
    task_files.write_task(Path(sys.argv[1]), make_task(), NOW)
except TaskFileError as err:
    print(f"TaskFileError: {err}")
"""


def test_read_only_dir_fails_cleanly(tmp_path: Path) -> None:
    """Run without the capability that lets root ignore directory permissions."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv(1) is missing to drop CAP_DAC_OVERRIDE")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    queue = tmp_path / "q"
    queue.mkdir()
    queue.chmod(0o500)
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, "-c", READ_ONLY_WRITE, str(queue)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        queue.chmod(0o700)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("TaskFileError: cannot write"), proc.stdout
    assert "Permission denied" in proc.stdout
    assert list(queue.iterdir()) == []


def test_failed_rename_leaves_no_tmp(tmp_path: Path) -> None:
    """The temp file was written, then the rename fails: it must not stay behind."""
    blocker = tmp_path / task_files.task_filename(NOW, TASK_ID)
    blocker.mkdir()
    (blocker / "keep").write_text("x")
    with pytest.raises(TaskFileError, match="cannot write"):
        task_files.write_task(tmp_path, make_task(), NOW)
    assert leftovers(tmp_path) == []
    assert (blocker / "keep").read_text() == "x"


def test_failed_write_leaves_no_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk (ENOSPC at fsync) ends in TaskFileError and no partial file of either name."""
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        if os.path.isfile(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(TaskFileError, match="No space left on device"):
        task_files.write_task(tmp_path, make_task(), NOW)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_queue_path_is_a_task_file_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(TaskFileError, match="cannot create directory"):
        task_files.write_task(tmp_path / "file" / "q", make_task(), NOW)


yaml_text = st.text(max_size=80)
payload_values = st.recursive(
    st.none() | st.booleans() | st.integers() | yaml_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(yaml_text, inner, max_size=3),
    max_leaves=8,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    summary=yaml_text,
    payload=st.dictionaries(
        yaml_text.filter(lambda k: k != "task_token"), payload_values, max_size=5
    ),
)
def test_unicode_round_trip(tmp_path: Path, summary: str, payload: dict[str, Any]) -> None:
    """Whatever text goes into summary and payload, an agent reads back exactly that."""
    task = make_task(summary=summary, payload=payload)
    path = task_files.write_task(tmp_path, task, NOW)
    try:
        assert task_files.load_task(path) == task
        assert yaml.safe_load(path.read_bytes()) == task  # what a pure-Python reader sees
    finally:
        path.unlink()


# --- Reading and finding ---------------------------------------------------------------------


def test_load_task_refuses_non_mapping_and_bad_yaml(tmp_path: Path) -> None:
    cases = {"list.yml": "- a\n- b\n", "bad.yml": "id: [unclosed\n", "empty.yml": ""}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(TaskFileError):
            task_files.load_task(tmp_path / name)
    with pytest.raises(TaskFileError, match="cannot be read"):
        task_files.load_task(tmp_path / "missing.yml")


def test_load_task_refuses_oversized_file(tmp_path: Path) -> None:
    big = tmp_path / "big.yml"
    big.write_text("id: x\nfiller: " + "a" * task_files.MAX_TASK_FILE_BYTES + "\n")
    with pytest.raises(TaskFileError, match="larger than"):
        task_files.load_task(big)


def test_find_task_in_queue_and_archive(tmp_path: Path) -> None:
    queued = task_files.write_task(tmp_path, make_task("aaaaaaaa-1"), NOW)
    archived = task_files.write_task(tmp_path / "archive", make_task("bbbbbbbb-2"), NOW)
    assert task_files.find_task(tmp_path, "aaaaaaaa-1") == queued
    assert task_files.find_task(tmp_path, "bbbbbbbb-2") == archived
    assert task_files.find_task(tmp_path, "cccccccc-3") is None
    assert task_files.find_task(tmp_path / "no-such-dir", "aaaaaaaa-1") is None


def test_find_task_prefers_queue_over_archive(tmp_path: Path) -> None:
    queued = task_files.write_task(tmp_path, make_task("dddddddd-4"), NOW)
    task_files.write_task(tmp_path / "archive", make_task("dddddddd-4"), NOW)
    assert task_files.find_task(tmp_path, "dddddddd-4") == queued


def test_find_task_matches_content_not_file_name(tmp_path: Path) -> None:
    """A file named after the id but holding another id is passed over; the right one is found."""
    decoy = tmp_path / "20260101-000000-eeeeeeee.yml"
    decoy.write_text(task_files.dump_yaml(make_task("eeeeeeee-other")))
    real = tmp_path / "20260101-000000-renamed.yml"
    real.write_text(task_files.dump_yaml(make_task("eeeeeeee-5")))
    assert task_files.find_task(tmp_path, "eeeeeeee-5") == real


def test_find_task_skips_malformed_files(tmp_path: Path) -> None:
    (tmp_path / "20260101-000000-ffffffff.yml").write_text("id: [unclosed\n")
    (tmp_path / "20260101-000001-ffffffff.yml").write_text("- just a list\n")
    (tmp_path / "20260101-000002-ffffffff.yml").write_bytes(b"\xff\xfe not utf-8 \x00")
    (tmp_path / "20260101-000003-ffffffff.yml").mkdir()  # unreadable as a file
    (tmp_path / "ignored.yml.tmp").write_text(task_files.dump_yaml(make_task("ffffffff-6")))
    good = task_files.write_task(tmp_path, make_task("ffffffff-6"), NOW)
    assert task_files.find_task(tmp_path, "ffffffff-6") == good
    good.unlink()
    assert task_files.find_task(tmp_path, "ffffffff-6") is None  # .tmp files are invisible


# --- Updating status ---------------------------------------------------------------------------


def test_update_status_keeps_keys_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "20260101-000000-operator.yml"
    original = {
        "id": "op-1",
        "status": "submitted",
        "dispatcher_lease": {"by": "router"},
        "history": [{"status": "submitted", "note": "filed"}],
        "ünïcode": "✓",
    }
    path.write_text(task_files.dump_yaml(original))
    path.chmod(0o640)
    task = task_files.update_task_status(path, "input-required", "blocked on 2 findings")
    on_disk = task_files.load_task(path)
    assert on_disk == task
    assert mode_of(path) == 0o640
    assert on_disk["status"] == "input-required"
    assert {k: v for k, v in on_disk.items() if k not in ("status", "history")} == {
        "id": "op-1",
        "dispatcher_lease": {"by": "router"},
        "ünïcode": "✓",
    }
    assert on_disk["history"][0] == {"status": "submitted", "note": "filed"}
    last = on_disk["history"][1]
    assert {k: last[k] for k in ("status", "actor", "note")} == {
        "status": "input-required",
        "actor": "temporal-worker",
        "note": "blocked on 2 findings",
    }
    assert datetime.fromisoformat(last["timestamp"]).tzinfo is not None
    assert leftovers(tmp_path) == []


def test_update_status_is_idempotent(tmp_path: Path) -> None:
    path = task_files.write_task(tmp_path, make_task(), NOW)
    task_files.update_task_status(path, "input-required", "blocked")
    first = path.read_bytes()
    inode = path.stat().st_ino
    again = task_files.update_task_status(path, "input-required", "blocked")
    assert path.read_bytes() == first
    assert path.stat().st_ino == inode  # not even rewritten
    assert [h["status"] for h in again["history"]] == ["submitted", "input-required"]
    # a different note is a new event
    task_files.update_task_status(path, "input-required", "blocked again")
    assert len(task_files.load_task(path)["history"]) == 3


def test_update_status_without_history_list(tmp_path: Path) -> None:
    path = tmp_path / "x.yml"
    path.write_text("id: x\nstatus: submitted\nhistory: not-a-list\n")
    task = task_files.update_task_status(path, "approved", "ok")
    assert [h["status"] for h in task["history"]] == ["approved"]


# --- The gate's mark and a decision in the file -----------------------------------------------


def test_gate_mark_names_the_latest_parked_run(tmp_path: Path) -> None:
    path = tmp_path / "20260101-000000-operator.yml"
    path.write_text(task_files.dump_yaml({"id": "op-1", "status": "submitted", "history": []}))
    assert gate_files.gate_mark(task_files.load_task(path)) is None
    task_files.update_task_status(
        path, "input-required", "blocked", workflow_id="wf", run_id="run-1"
    )
    assert gate_files.gate_mark(task_files.load_task(path)) == ("wf", "run-1")
    # a later run parked on the same task, with the same note, is a new entry: its mark wins
    task_files.update_task_status(
        path, "input-required", "blocked", workflow_id="wf", run_id="run-2"
    )
    task = task_files.load_task(path)
    assert gate_files.gate_mark(task) == ("wf", "run-2")
    assert len(task["history"]) == 2
    # only this worker's entries count: an agent's input-required is no mark
    task["history"].append(
        {"status": "input-required", "actor": "dev", "workflow_id": "x", "run_id": "y"}
    )
    assert gate_files.gate_mark(task) is None


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("approved", {"decision": "approved", "by": "alice", "note": "fine"}),
        ("rejected", {"decision": "rejected", "by": "alice", "note": "fine"}),
        ("input-required", None),
        ("cancelled", None),
        ("", None),
    ],
)
def test_file_decision_is_the_status_word(status: str, expected: dict[str, str] | None) -> None:
    task = {
        "status": status,
        "history": [
            {"status": "approved", "actor": "alice", "note": "fine"},
            {"status": "rejected", "actor": "alice", "note": "fine"},
        ],
    }
    assert gate_files.file_decision(task) == expected
    assert gate_files.file_decision({"status": "approved"}) == {
        "decision": "approved",
        "by": "",
        "note": "",
    }


# --- Superseding and closing -------------------------------------------------------------------


def dispatched(
    queue: Path,
    task_id: str,
    workflow_id: str,
    activity_id: str,
    attempt: int,
    status: str = "submitted",
    **extra: Any,
) -> Path:
    task = make_task(
        task_id,
        payload={"workflow_id": workflow_id, "activity_id": activity_id, "attempt": attempt},
    )
    task["status"] = status
    task.update(extra)
    return task_files.write_task(queue, task, NOW)


def statuses(queue: Path) -> dict[str, str]:
    return {p.name: task_files.load_task(p)["status"] for p in task_files.iter_task_files(queue)}


def test_supersede_earlier_attempts(tmp_path: Path) -> None:
    old1 = dispatched(tmp_path, "a0000001", "wf-1", "1", 1)
    old2 = dispatched(tmp_path, "a0000002", "wf-1", "1", 2, status="input-required")
    current = dispatched(tmp_path, "a0000003", "wf-1", "1", 3)
    done = dispatched(tmp_path, "a0000004", "wf-1", "1", 1, status="approved")
    other_stage = dispatched(tmp_path, "a0000005", "wf-1", "2", 1)
    other_wf = dispatched(tmp_path, "a0000006", "wf-2", "1", 1)
    foreign = dispatched(tmp_path, "a0000007", "wf-1", "1", 1, source_agent="dispatcher")
    archived = dispatched(tmp_path / "archive", "a0000008", "wf-1", "1", 1)
    before = statuses(tmp_path)

    earlier = {"a0000001", "a0000002", "a0000004", "a0000006", "a0000007", "a0000008"}
    marked = task_files.supersede_earlier_attempts(tmp_path, "wf-1", earlier, 3)

    assert sorted(marked) == sorted([old1, old2])
    after = statuses(tmp_path)
    assert after[old1.name] == after[old2.name] == "superseded"
    for untouched in (current, done, other_stage, other_wf, foreign):
        assert after[untouched.name] == before[untouched.name], untouched.name
    assert task_files.load_task(archived)["status"] == "submitted"
    note = task_files.load_task(old1)["history"][-1]
    assert note["status"] == "superseded" and note["note"] == "Superseded by attempt 3"
    assert mode_of(old1) == 0o600
    # idempotent: nothing left to supersede
    assert task_files.supersede_earlier_attempts(tmp_path, "wf-1", earlier, 3) == []


def test_close_open_tasks(tmp_path: Path) -> None:
    open1 = dispatched(tmp_path, "b0000001", "wf-1", "1", 1)
    open2 = dispatched(tmp_path, "b0000002", "wf-1", "2", 1)
    superseded = dispatched(tmp_path, "b0000003", "wf-1", "1", 0, status="superseded")
    approved = dispatched(tmp_path, "b0000004", "wf-1", "3", 1, status="approved")
    other = dispatched(tmp_path, "b0000005", "wf-9", "1", 1)

    closed = task_files.close_open_tasks(tmp_path, "wf-1", "BuildPlanWorkflow failed")

    assert sorted(closed) == sorted([open1, open2])
    after = statuses(tmp_path)
    assert after[open1.name] == after[open2.name] == "cancelled"
    assert after[superseded.name] == "superseded"
    assert after[approved.name] == "approved"
    assert after[other.name] == "submitted"
    assert task_files.load_task(open1)["history"][-1]["note"] == "BuildPlanWorkflow failed"
    assert task_files.close_open_tasks(tmp_path, "wf-1", "BuildPlanWorkflow failed") == []
