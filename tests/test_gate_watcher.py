"""The block gate's watcher, in worker.py processes against the dev server: a decision written
into the originating task file reaches the parked pipeline at once, however it is written; a
`rejected` file ends the pipeline without close-out, by the watcher and by the fallback check;
two workers on one directory decide once; a restarted worker sees what changed while it was down.

With BLOCK_POLL_SECONDS=300 a watched file's fallback check comes an hour after the gate opens,
so whatever resolves the gate within these tests' bounds is the watcher. Latency is measured by
bench P5b; the bound here only says "not the poll", with room for a loaded machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from activities import gate_files, task_files
from config import WorkerConfig
from harness.env import make_config
from harness.pipelines import (
    PipelineRun,
    PipelineScript,
    dispatched,
    running_pipeline,
    status_of,
    summary_of,
    wait_stage,
)
from harness.worker_process import WorkerProcess, worker_env
from task_dir_watch import RESTART_DELAY
from tests.helpers.checks import wait_for
from tests.helpers.figures import Figures
from tests.helpers.histories import save_history
from tests.helpers.queue import ALL_PHASES_COMPLETED

# Far above the watcher's ~0.1 s, far below the poll's hour: the watcher delivered it.
WATCHER_BOUND = 15.0
BLOCK = "world-writable socket"
RESULT_BOUND = 120.0  # a hang fails the test instead of stalling the suite


def decide_in_file(
    path: Path, decision: str, how: str, actor: str = "dana", note: str = "decided in the file"
) -> None:
    """An operator's edit: `in-place` rewrites the file where it is (truncate and write), as
    `sed -i`-less tools and simple editors do; `rename` saves aside and renames over it, as vim,
    emacs and most YAML tools do."""
    task = yaml.safe_load(path.read_text())
    task["status"] = decision
    task["history"].append(
        {"timestamp": "2026-11-24T01:00:00+00:00", "status": decision, "actor": actor, "note": note}
    )
    text = yaml.safe_dump(task)
    if how == "in-place":
        with path.open("w") as fh:
            fh.write(text)
    else:
        aside = path.with_name(f".{path.name}.swp")
        aside.write_text(text)
        os.replace(aside, path)


def strip_marks(path: Path) -> None:
    """What a tool that keeps only the keys it knows does to the file (and what an earlier
    release's notify_blocks wrote): history entries without the run's mark."""
    task = yaml.safe_load(path.read_text())
    task["history"] = [
        {k: e[k] for k in ("timestamp", "status", "actor", "note") if k in e}
        for e in task["history"]
    ]
    path.write_text(yaml.safe_dump(task))


async def resolved_within(handle: WorkflowHandle, bound: float) -> float:
    """Seconds until the status query shows the gate resolved; fails after `bound`."""
    started = time.monotonic()
    while (await status_of(handle)).resolution is None:
        assert time.monotonic() - started < bound, f"the gate was not resolved in {bound:g} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def events(workers: list[WorkerProcess], name: str) -> list[dict[str, Any]]:
    return [e for w in workers for e in w.events(name)]


def assert_ended_without_closeout(config: WorkerConfig, result: Any) -> None:
    assert result.status == "rejected"
    summary = summary_of(result.summary_path)
    assert summary["outcome"] == "rejected"
    assert summary["resolution"]["decision"] == "rejected"
    assert summary["resolution"]["via"] == "task-file"
    kinds = [t["task_type"] for t in dispatched(config)]
    assert "build_closeout" not in kinds, kinds


@contextlib.asynccontextmanager
async def parked_while_down(
    client: Client, config: WorkerConfig, worker: WorkerProcess
) -> AsyncIterator[PipelineRun]:
    """A pipeline parked at its block gate by `worker`, then the worker stopped: what changes
    in the file now, no watcher sees. The test starts the worker again; the block stops it."""
    async with running_pipeline(
        client, config, PipelineScript(blocks=[BLOCK]).decide, worker
    ) as run:
        await wait_stage(run.handle, "awaiting-approval")
        await worker.stop()
        yield run


@pytest.mark.parametrize(
    ("how", "decision"),
    [
        ("in-place", "approved"),
        ("rename", "approved"),
        ("in-place", "rejected"),
        ("rename", "rejected"),
    ],
)
async def test_file_decision_reaches_the_parked_pipeline_at_once(
    client: Client,
    gate_config: WorkerConfig,
    tmp_path: Path,
    figures: Figures,
    how: str,
    decision: str,
) -> None:
    config = gate_config
    script = PipelineScript(blocks=[BLOCK])
    worker = WorkerProcess(worker_env(config), tmp_path / "logs")
    async with running_pipeline(client, config, script.decide, worker) as run:
        await wait_stage(run.handle, "awaiting-approval")
        await wait_watching([worker])
        mark = gate_files.gate_mark(task_files.load_task(run.origin))
        assert mark == (run.handle.id, (await run.handle.describe()).run_id)
        decide_in_file(run.origin, decision, how)
        took = await resolved_within(run.handle, WATCHER_BOUND)
        result = await asyncio.wait_for(run.handle.result(), RESULT_BOUND)
        if how == "rename":
            await save_history(run.handle, f"pipeline_watcher_{decision}_fewer_events")
    figures.record("gate watcher", f"file {decision} ({how}) to gate resolved (s)", took)
    delivered = worker.events("file_decision_delivered")
    assert [(e["workflow_id"], e["decision"]) for e in delivered] == [(run.handle.id, decision)]
    assert worker.events("blocks_resolved") == []  # not the fallback check
    if decision == "rejected":
        assert_ended_without_closeout(config, result)
        return
    assert result.status == "complete"
    resolution = summary_of(result.summary_path)["resolution"]
    assert resolution == {
        **resolution,
        "decision": "approved",
        "via": "task-file",
        "by": "dana",
        "note": "decided in the file",
    }


async def test_file_rejected_while_no_worker_ran_is_found_by_the_fallback_check(
    client: Client, address: str, tmp_path: Path
) -> None:
    """The watcher cannot see this one: the file was rewritten, while no worker ran, by a tool
    that drops the keys it does not know, so it no longer names the parked run. The gate's own
    check, every BLOCK_POLL_SECONDS, still reads it."""
    config = make_config(tmp_path, address, block_poll_seconds=0.5)
    worker = WorkerProcess(worker_env(config), tmp_path / "logs")
    async with parked_while_down(client, config, worker) as run:
        decide_in_file(run.origin, "rejected", "rename", note="not shippable")
        strip_marks(run.origin)
        assert gate_files.gate_mark(task_files.load_task(run.origin)) is None
        await worker.start()
        result = await asyncio.wait_for(run.handle.result(), RESULT_BOUND)
        await wait_watching([worker])
    assert_ended_without_closeout(config, result)
    assert summary_of(result.summary_path)["resolution"]["note"] == "not shippable"
    second_run = worker.runs[1].events
    assert [e["decisions_found"] for e in second_run("gate_watch_started")] == [0]
    assert second_run("file_decision_delivered") == []
    assert [e["decision"] for e in second_run("blocks_resolved")] == ["rejected"]


async def test_two_workers_on_one_directory_decide_once(
    client: Client, gate_config: WorkerConfig, tmp_path: Path
) -> None:
    config = gate_config
    script = PipelineScript(blocks=[BLOCK], flags=["pin the image"])
    env = worker_env(config)
    a = WorkerProcess(env, tmp_path / "a", name="a")
    b = WorkerProcess(env, tmp_path / "b", name="b")
    async with a, running_pipeline(client, config, script.decide, b) as run:
        await wait_stage(run.handle, "awaiting-approval")
        await wait_watching([a, b])
        decide_in_file(run.origin, "approved", "rename")
        result = await asyncio.wait_for(run.handle.result(), RESULT_BOUND)
        await wait_logged([a, b], "file_decision_refused", 1)
    assert result.status == "complete"
    summary = summary_of(result.summary_path)
    assert summary["outcome"] == "partial"
    assert summary["phases_completed"] == ALL_PHASES_COMPLETED
    assert len(events([a, b], "file_decision_delivered")) == 1
    assert len(events([a, b], "file_decision_refused")) == 1
    history = await run.handle.fetch_history()
    accepted = [
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    ]
    assert len(accepted) == 1
    assert not [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
    ]


async def test_restarted_worker_delivers_a_file_approved_while_it_was_down(
    client: Client, gate_config: WorkerConfig, tmp_path: Path
) -> None:
    worker = WorkerProcess(worker_env(gate_config), tmp_path / "logs")
    async with parked_while_down(client, gate_config, worker) as run:
        decide_in_file(run.origin, "approved", "in-place", actor="erin", note="while down")
        await worker.start()
        await resolved_within(run.handle, WATCHER_BOUND)
        result = await asyncio.wait_for(run.handle.result(), RESULT_BOUND)
    assert result.status == "complete"
    assert summary_of(result.summary_path)["resolution"]["by"] == "erin"
    second_run = worker.runs[1].events
    assert [e["decisions_found"] for e in second_run("gate_watch_started")] == [1]
    assert [e["workflow_id"] for e in second_run("file_decision_delivered")] == [run.handle.id]
    assert second_run("blocks_resolved") == []


async def wait_watching(workers: list[WorkerProcess]) -> None:
    await wait_for(
        lambda: all(w.current and w.current.events("gate_watch_started") for w in workers),
        30,
        what="every worker's watch up",
    )


async def wait_logged(workers: list[WorkerProcess], name: str, count: int) -> None:
    await wait_for(lambda: len(events(workers, name)) >= count, 30, what=f"{count} x {name}")


async def test_a_watch_that_cannot_start_is_said_once(address: str, tmp_path: Path) -> None:
    """The worker runs on (the fallback check covers); the warning is not repeated at each of
    the watcher's retries."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = make_config(tmp_path, address, agent_task_dir=blocker / "task-queue")
    async with WorkerProcess(worker_env(config), tmp_path / "logs") as worker:
        await wait_for(
            lambda: bool(worker.events("gate_watch_failed")), 30, what="gate_watch_failed"
        )
        await asyncio.sleep(RESTART_DELAY + 3)  # at least one retry has failed again
        assert worker.alive()
    failed = worker.events("gate_watch_failed")
    assert [e["level"] for e in failed] == ["warning"]
    assert str(blocker) in failed[0]["dir"] and failed[0]["error"]
