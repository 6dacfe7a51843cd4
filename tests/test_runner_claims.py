"""Claims in the task files: contended by real processes, and found again after a restart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from activities import task_files
from harness.env import ROOT
from runner import claims

pytestmark = pytest.mark.unit

CLAIMER = """
import sys, time
from pathlib import Path
from runner import claims
from exceptions import TaskFileError
queue, me, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
while not go.exists():
    time.sleep(0.001)
for path in sorted(queue.glob('*.yml')):
    try:
        if claims.claim(queue, path, me, Path('/l') / path.name, 'claimed'):
            print(path.name)
    except TaskFileError as err:
        print('ERROR', err)
"""


def write_tasks(queue: Path, count: int) -> None:
    task_files.ensure_private_dir(queue)
    for n in range(count):
        task = task_files.build_task(
            task_id=f"{n:08d}-task",
            created=task_files.now_utc(),
            target_agent="dev",
            task_type="build_phase",
            summary="s",
            payload={},
            task_token="eA==",
        )
        task_files.write_text_atomic(
            queue / f"20260101-000000-{n:08d}.yml", task_files.dump_yaml(task)
        )


def test_racing_processes_claim_each_task_exactly_once(tmp_path: Path) -> None:
    queue, go = tmp_path / "queue", tmp_path / "go"
    write_tasks(queue, 60)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(queue), f"r{n}", str(go)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    go.touch()
    outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    won = [name for out in outputs for name in out]
    assert "ERROR" not in won
    assert sorted(won) == sorted(p.name for p in queue.glob("*.yml"))  # each once, none twice
    for path in queue.glob("*.yml"):
        task = task_files.load_task(path)
        assert task["status"] == "in-progress"
        assert [h["status"] for h in task["history"]] == ["submitted", "in-progress"]


def test_own_in_progress_finds_only_this_runners_tasks(tmp_path: Path) -> None:
    queue = tmp_path / "queue"
    write_tasks(queue, 3)
    first, second, third = sorted(queue.glob("*.yml"))
    claims.claim(queue, first, "runner-a", tmp_path / "a.log", "claimed")
    claims.claim(queue, second, "runner-b", tmp_path / "b.log", "claimed")
    assert claims.claim(queue, first, "runner-b", tmp_path / "x.log", "claimed") is None
    assert [p for p, _ in claims.own_in_progress(queue, "runner-a")] == [first]
    claims.finish(queue, first, "runner-a", "completed", "done", "out")
    assert claims.own_in_progress(queue, "runner-a") == []
    task = task_files.load_task(first)
    assert task["result"]["output"] == "out" and task["result"]["completed_by"] == "runner-a"
    assert task_files.load_task(third)["status"] == "submitted"
