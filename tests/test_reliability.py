"""Faults the worker survives: kill -9 at every stage boundary, kill -9 at the block gate, the
Temporal server stopped and restarted under it, two workers on one queue, and task or audit
directories it cannot write (read-only, full disk).

Everything here is real: worker.py runs as a subprocess with the environment PM2 gives it and
logs at DEBUG; agents answer with complete_activity.py; servers are the Temporal dev server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from models import (
    BuildPipelineResult,
    BuildPlanInput,
    BuildPlanResult,
    DecisionInput,
    PhaseSpec,
    PipelineStatus,
)
from tests.conftest import make_config
from tests.figures import Figures
from tests.pipeline_support import (
    PipelineScript,
    approve_by_file,
    install_matrix_recorder,
    matrix_messages,
    originating_task,
    pipeline_input,
    summary_of,
)
from tests.reliability_support import (
    QueueAgent,
    WorkerProcess,
    dispatch_counts,
    harvest_tokens,
    leftovers,
    scan_for_secrets,
    stage_of,
    wait_until,
    worker_env,
)

PIPELINE_STAGES = ["prefab", "implement", "audit", "fixes", "close"]
# The worker's log event that says a stage began, for each of the nine stages (and phases).
BEGIN_EVENTS = {"prefab_dispatched": "prefab", "build_dispatched": "implement",
                "audit_dispatched": "audit", "triage_processed": "triage",
                "flags_dispatched": "fixes", "block_notified": "notify",
                "waiting_for_resolution": "awaiting-approval", "closeout_dispatched": "close",
                "summary_written": "summary", "phase_dispatched": "phase"}
GATE_FILE, GATE_UPDATE = "gate-file", "gate-update"


async def stage_now(handle: WorkflowHandle) -> str:
    return (await handle.query("status", result_type=PipelineStatus)).stage


async def is_closed(handle: WorkflowHandle) -> bool:
    return (await handle.describe()).status != WorkflowExecutionStatus.RUNNING


def assert_no_secrets(texts: list[str], *queue_dirs: Path, figures: Figures, area: str) -> None:
    scan = scan_for_secrets(texts, harvest_tokens(*queue_dirs))
    figures.record(area, "log scan: texts / MB / token forms / hits",
                   f"{scan.texts} / {scan.chars / 1e6:.1f} / {scan.needles} / {len(scan.hits)}")
    assert scan.needles > 0
    assert scan.hits == [], scan.hits[:5]


# --- kill -9 at every stage boundary -----------------------------------------------------------


@dataclass
class Track:
    """One workflow of the kill test and the stages it is held at, one per kill round.

    A held stage's task is not answered until its round's kill: the answer then arrives while no
    worker runs. `gate-file` / `gate-update` hold the pipeline at its block gate instead, to be
    approved by task file during the downtime, or by update after the restart.
    """

    name: str
    holds: dict[int, str]
    script: PipelineScript | None = None  # None: a BuildPlan
    start_round: int | None = None  # started while no worker runs, in this round's downtime
    handle: WorkflowHandle | None = None
    task_id: str = ""
    origin: Path | None = None
    held: dict[str, tuple[Path, dict[str, Any]]] = field(default_factory=dict)
    released: set[int] = field(default_factory=set)

    def next_hold(self) -> str | None:
        pending = [r for r in sorted(self.holds) if r not in self.released]
        return self.holds[pending[0]] if pending else None

    def answer(self, task: dict[str, Any]) -> tuple[str, str]:
        if self.script is None:
            return ("success", f"phase-{task['payload']['phase_number']}-done")
        answer = self.script.decide(task)
        assert answer is not None
        return answer


def plan_input() -> BuildPlanInput:
    return BuildPlanInput(plan_name="kill-plan", phases=[
        PhaseSpec(number=n, agent_type="dev", description=f"phase {n}") for n in (1, 2, 3)])


@pytest.mark.slow
async def test_kill9_at_every_stage_boundary(client: Client, address: str, tmp_path: Path,
                                             figures: Figures) -> None:
    """Three kill -9 rounds. Before each, every workflow is parked at a stage (or finished);
    answers, approvals and a new start arrive while no worker runs; the next run carries on.

    Held when killed: prefab, implement, audit, fixes, awaiting-approval, close and BuildPlan
    phases 1-3. Begun by a restarted worker after the downtime: prefab (started while down),
    implement, audit, triage, fixes, notify, awaiting-approval, close and summary.
    """
    config = make_config(tmp_path, address, block_poll_seconds=0.5)
    record = install_matrix_recorder(config)
    flag, block = "rotate the deploy key", "database port open to the world"
    tracks = [
        Track("flags", {0: "prefab", 1: "fixes", 2: "close"}, PipelineScript(flags=[flag])),
        Track("blocks-by-file", {0: "implement", 1: "fixes", 2: GATE_FILE},
              PipelineScript(flags=[flag], blocks=[block])),
        Track("blocks-by-update", {0: "audit", 1: GATE_UPDATE},
              PipelineScript(blocks=[block])),
        Track("started-while-down", {1: "audit"}, PipelineScript(flags=[flag]), start_round=0),
        Track("plan", {0: "phase-1", 1: "phase-2", 2: "phase-3"}),
    ]
    by_id: dict[str, Track] = {}

    def decide(path: Path, task: dict[str, Any]) -> tuple[str, str] | None:
        track = by_id[task["payload"]["workflow_id"]]
        stage = stage_of(task)
        if track.next_hold() == stage:
            track.held[stage] = (path, task)
            return None
        return track.answer(task)

    async def start(track: Track) -> None:
        wf_id = f"kill-{track.name}-{uuid.uuid4().hex[:8]}"
        by_id[wf_id] = track
        if track.script is None:
            track.handle = await client.start_workflow(
                "BuildPlanWorkflow", plan_input(), id=wf_id, task_queue=config.task_queue,
                result_type=BuildPlanResult)
        else:
            track.task_id, track.origin = originating_task(config)
            track.handle = await client.start_workflow(
                "BuildPipelineWorkflow", pipeline_input(track.task_id, build_name=track.name),
                id=wf_id, task_queue=config.task_queue, result_type=BuildPipelineResult)

    async def parked(track: Track) -> bool:
        """At its next hold (held task written, or at the gate), or finished: nothing of it
        is in flight in the worker, so a kill interrupts no short activity."""
        assert track.handle is not None
        hold = track.next_hold()
        if hold is None:
            return await is_closed(track.handle)
        if hold in (GATE_FILE, GATE_UPDATE):
            return await stage_now(track.handle) == "awaiting-approval"
        return hold in track.held

    worker = WorkerProcess(worker_env(config, tmp_path / "logs" / "worker.log"), tmp_path / "logs")
    started = time.monotonic()
    restarts: list[float] = []
    down_answers: Counter[int] = Counter()
    update_latency = gate_file_wait = 0.0
    try:
        await worker.start()
        async with QueueAgent(config.agent_task_dir, address, decide) as agent:
            for track in tracks:
                if track.start_round is None:
                    await start(track)
            for rnd in range(3):
                live = [t for t in tracks if t.handle is not None]
                await wait_until(lambda live=live: _all(parked(t) for t in live), 90,
                                 f"every workflow parked for kill round {rnd}")
                await worker.kill9()
                # --- no worker runs: answers, approvals, a new workflow ---
                releases = []
                for track in live:
                    hold = track.holds.get(rnd)
                    if hold is None or hold == GATE_UPDATE:
                        continue
                    if hold == GATE_FILE:
                        assert track.origin is not None
                        approve_by_file(track.origin, actor="operator-file", note="ok")
                    else:
                        path, task = track.held[hold]
                        releases.append(agent.complete_now(path, *track.answer(task)))
                for code in await asyncio.gather(*releases):
                    down_answers[code] += 1
                for track in tracks:
                    if track.start_round == rnd:
                        await start(track)
                    if rnd in track.holds:
                        track.released.add(rnd)  # from now on, its next hold applies
                assert not worker.alive()
                restarts.append(await worker.start())
                for track in live:
                    if track.holds.get(rnd) == GATE_UPDATE:
                        assert track.handle is not None
                        t0 = time.monotonic()
                        await track.handle.execute_update("approve", DecisionInput(by="bob"))
                        update_latency = time.monotonic() - t0
            gate_t0 = time.monotonic()
            results = {}
            for track in tracks:
                assert track.handle is not None
                results[track.name] = await asyncio.wait_for(track.handle.result(), 120)
                if track.name == "blocks-by-file":
                    gate_file_wait = time.monotonic() - gate_t0
    finally:
        await worker.stop()
    wall = time.monotonic() - started

    assert down_answers == Counter({0: 10}), down_answers  # the server took every answer
    assert agent.errors == []

    # every workflow finished, with the right summary
    assert results["plan"] == BuildPlanResult(status="complete", phases_run=3)
    expected = {
        "flags": ("success", PIPELINE_STAGES, None),
        "blocks-by-file": ("partial", PIPELINE_STAGES, ("task-file", "operator-file")),
        "blocks-by-update": ("partial", ["prefab", "implement", "audit", "close"],
                             ("update", "bob")),
        "started-while-down": ("success", PIPELINE_STAGES, None),
    }
    for name, (outcome, stages, resolution) in expected.items():
        result = results[name]
        assert result.status == "complete", (name, result)
        summary = summary_of(result.summary_path)
        assert summary["outcome"] == outcome, (name, summary)
        assert [p for p in summary["phases_completed"] if p != "triage"] == stages, name
        if resolution is not None:
            assert (summary["resolution"]["via"], summary["resolution"]["by"]) == resolution
    assert sorted(p.name for p in config.summary_dir.rglob("*.yml")) == sorted(
        f"{t.handle.id}.yml" for t in tracks if t.script is not None and t.handle is not None)

    # no stage dispatched twice: one task file per workflow and stage, and no other
    counts = dispatch_counts(config.agent_task_dir)
    assert set(counts.values()) == {1}, counts
    wanted = {(t.handle.id, s) for t in tracks if t.handle is not None
              for s in (expected[t.name][1] if t.script else ["phase-1", "phase-2", "phase-3"])}
    assert set(counts) == wanted
    # one Matrix message per block, none repeated by a restarted worker
    actions = [m["message"].splitlines()[0] for m in matrix_messages(record)
               if m["message"].startswith("[ACTION]")]
    assert sorted(actions) == ["[ACTION] blocks-by-file: block 1/1 needs review",
                               "[ACTION] blocks-by-update: block 1/1 needs review"]
    assert leftovers(config.agent_task_dir, config.audit_dir, config.summary_dir) == []
    assert_no_secrets(worker.outputs() + agent.outputs, config.agent_task_dir,
                      figures=figures, area="kill -9")

    # What each restarted run did first, per workflow: the stage its downtime led into.
    names = {t.handle.id: t.name for t in tracks if t.handle is not None}
    first: list[dict[str, str]] = []
    for run in worker.runs[1:]:
        begun: dict[str, str] = {}
        for event in run_events(run.out):
            stage = BEGIN_EVENTS.get(event.get("event", ""))
            if stage and event.get("workflow_id") in names:
                begun.setdefault(names[event["workflow_id"]], stage)
        first.append(begun)
    # by update, the gate's poller restarts only if its heartbeat timed out before the update
    assert first[1].pop("blocks-by-update") in ("awaiting-approval", "close"), first
    assert first == [
        {"flags": "implement", "blocks-by-file": "audit", "blocks-by-update": "triage",
         "started-while-down": "prefab", "plan": "phase"},
        {"flags": "close", "blocks-by-file": "notify", "started-while-down": "triage",
         "plan": "phase"},
        {"flags": "summary", "blocks-by-file": "awaiting-approval"},
    ], first
    begun_after_kill = {e: s for run in worker.runs[1:] for e, s in _begun(run.out, names)}
    assert set(begun_after_kill.values()) >= set(BEGIN_EVENTS.values())

    figures.record("kill -9", "kills / workflows / stages held at a kill",
                   f"3 / {len(tracks)} / {sum(len(t.holds) for t in tracks)}")
    figures.record("kill -9", "answers delivered while no worker ran (exit 0)", down_answers[0])
    figures.record("kill -9", "task files / dispatched twice", f"{sum(counts.values())} / 0")
    figures.record("kill -9", "worker restart to worker_started, max (s)", max(restarts))
    figures.record("kill -9", "update approval after restart (s)", update_latency)
    figures.record("kill -9", "file approval, restart to pipeline done (s)", gate_file_wait)
    figures.record("kill -9", "test wall time (s)", wall)


def run_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


def _begun(path: Path, names: dict[str, str]) -> list[tuple[str, str]]:
    """(workflow name + stage, stage) for every stage this run began."""
    found = []
    for event in run_events(path):
        stage = BEGIN_EVENTS.get(event.get("event", ""))
        if stage and event.get("workflow_id") in names:
            found.append((f"{names[event['workflow_id']]}:{stage}", stage))
    return found


async def _all_async(checks: Any) -> bool:
    for check in checks:
        if not await check:
            return False
    return True


def _all(checks: Any) -> Any:
    return _all_async(checks)
