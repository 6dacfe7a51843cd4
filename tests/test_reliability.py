"""Faults the worker survives: kill -9 at every stage boundary, kill -9 at the block gate, the
Temporal server stopped and restarted under it, two workers on one queue, and task or audit
directories it cannot write (read-only, full disk).

Everything here is real: worker.py runs as a subprocess with the environment PM2 gives it and
logs at DEBUG; agents answer with complete_activity.py; servers are the Temporal dev server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from activities import task_files
from config import WorkerConfig
from harness.agents import ScriptedAgent
from harness.cli import run_cli
from harness.env import build_plan_input, free_port, make_config, start_plan
from harness.pipelines import (
    PipelineScript,
    approve_by_file,
    install_matrix_recorder,
    matrix_messages,
    originating_task,
    start_pipeline,
    status_of,
    summary_of,
    wait_stage,
)
from harness.temporal_server import DevServer
from harness.worker_process import WorkerProcess, WorkerRun, debug_env
from models import BuildPlanResult, DecisionInput
from tests.helpers.checks import stderr_line, wait_for
from tests.helpers.figures import Figures
from tests.helpers.queue import STAGE_OF_TYPE, dispatch_counts, leftovers, stage_of
from tests.helpers.secrets import harvest_tokens, scan_for_secrets

PIPELINE_STAGES = list(STAGE_OF_TYPE.values())
# The worker's log event that says a stage began, for each of the nine stages (and phases).
BEGIN_EVENTS = {
    "prefab_dispatched": "prefab",
    "build_dispatched": "implement",
    "audit_dispatched": "audit",
    "triage_processed": "triage",
    "flags_dispatched": "fixes",
    "block_notified": "notify",
    "waiting_for_resolution": "awaiting-approval",
    "closeout_dispatched": "close",
    "summary_written": "summary",
    "phase_dispatched": "phase",
}
GATE_FILE, GATE_UPDATE = "gate-file", "gate-update"


async def is_closed(handle: WorkflowHandle) -> bool:
    return (await handle.describe()).status != WorkflowExecutionStatus.RUNNING


def assert_no_secrets(
    texts: list[str], tokens: list[bytes], *, figures: Figures, area: str, label: str = ""
) -> None:
    """No token dispatched here, nor anything token-shaped or PEM, in any of `texts`."""
    scan = scan_for_secrets(texts, tokens)
    figures.record(
        area,
        f"{label}log scan: texts / MB / token forms / hits",
        f"{scan.texts} / {scan.chars / 1e6:.1f} / {scan.needles} / {len(scan.hits)}",
    )
    assert scan.needles > 0
    assert scan.hits == [], scan.hits[:5]


# --- kill -9 at every stage boundary -----------------------------------------------------------


FLAG, BLOCK = "rotate the deploy key", "database port open to the world"
PLAN_PHASES = ["phase-1", "phase-2", "phase-3"]
KILL_ROUNDS = 3


@dataclass(frozen=True)
class KillCase:
    """One workflow of the kill -9 run: where it is held at each kill, and how it must end.

    `holds` maps a kill round to the stage the workflow is parked at when the worker is killed.
    A held stage's task is not answered until its round's kill: the answer then arrives while no
    worker runs. `gate-file` / `gate-update` hold the pipeline at its block gate instead, to be
    approved by task file during the downtime, or by update after the restart. `first_begun`
    maps a kill round to the first stage the worker restarted after it begins for this
    workflow (none: it begins nothing); a tuple allows any of its stages.
    """

    name: str
    holds: dict[int, str]
    stages: list[str]  # completed, in order (triage aside); the plan's phases for the plan
    first_begun: dict[int, str | tuple[str, ...]]
    flags: tuple[str, ...] = ()
    blocks: tuple[str, ...] = ()
    plan: bool = False  # a BuildPlan, else a BuildPipeline
    start_round: int | None = None  # started while no worker runs, in this round's downtime
    outcome: str = "success"  # the pipeline summary's
    resolution: tuple[str, str] | None = None  # the block's (via, by)


# At the gate, a restarted worker's first stage is its next check (logged only on the gate's
# first check) or, once that check saw the approval, the close-out.
AT_GATE = ("awaiting-approval", "close")
KILL_CASES = [
    KillCase(
        "flags",
        {0: "prefab", 1: "fixes", 2: "close"},
        PIPELINE_STAGES,
        {0: "implement", 1: "close", 2: "summary"},
        flags=(FLAG,),
    ),
    KillCase(
        "blocks-by-file",
        {0: "implement", 1: "fixes", 2: GATE_FILE},
        PIPELINE_STAGES,
        {0: "audit", 1: "notify", 2: AT_GATE},
        flags=(FLAG,),
        blocks=(BLOCK,),
        outcome="partial",
        resolution=("task-file", "operator-file"),
    ),
    KillCase(
        "blocks-by-update",
        {0: "audit", 1: GATE_UPDATE},
        ["prefab", "implement", "audit", "close"],
        {0: "triage", 1: AT_GATE},
        blocks=(BLOCK,),
        outcome="partial",
        resolution=("update", "bob"),
    ),
    KillCase(
        "started-while-down",
        {1: "audit"},
        PIPELINE_STAGES,
        {0: "prefab", 1: "triage"},
        flags=(FLAG,),
        start_round=0,
    ),
    KillCase(
        "plan",
        {0: "phase-1", 1: "phase-2", 2: "phase-3"},
        PLAN_PHASES,
        {0: "phase", 1: "phase"},
        plan=True,
    ),
]


@dataclass
class Track:
    """A KillCase as it runs: its workflow, and the tasks held so far."""

    case: KillCase
    handle: WorkflowHandle | None = None
    task_id: str = ""
    origin: Path | None = None
    held: dict[str, tuple[Path, dict[str, Any]]] = field(default_factory=dict)
    released: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.script = (
            None
            if self.case.plan
            else PipelineScript(flags=list(self.case.flags), blocks=list(self.case.blocks))
        )

    def next_hold(self) -> str | None:
        holds = self.case.holds
        pending = [r for r in sorted(holds) if r not in self.released]
        return holds[pending[0]] if pending else None

    def answer(self, task: dict[str, Any]) -> tuple[str, str]:
        if self.script is None:
            return ("success", f"phase-{task['payload']['phase_number']}-done")
        answer = self.script.decide(task)
        assert answer is not None
        return answer


@dataclass
class KillRun:
    """The driver: starts the cases' workflows, answers their agents (holding what the table
    holds), and runs the kill rounds against one worker process."""

    client: Client
    config: WorkerConfig
    worker: WorkerProcess
    tracks: list[Track]
    by_id: dict[str, Track] = field(default_factory=dict)
    restarts: list[float] = field(default_factory=list)
    down_answers: Counter[int] = field(default_factory=Counter)
    update_latency: float = 0.0
    agent: ScriptedAgent | None = None  # set once it runs: decide needs its task paths

    def decide(self, task: dict[str, Any]) -> tuple[str, str] | None:
        track = self.by_id[task["payload"]["workflow_id"]]
        stage = stage_of(task)
        if track.next_hold() == stage:
            assert self.agent is not None
            track.held[stage] = (self.agent.path_of(task), task)
            return None
        return track.answer(task)

    async def start(self, track: Track) -> None:
        wf_id = f"kill-{track.case.name}-{uuid.uuid4().hex[:8]}"
        self.by_id[wf_id] = track
        if track.script is None:
            plan = build_plan_input("kill-plan", 3)
            track.handle = await start_plan(
                self.client, self.config.task_queue, plan, workflow_id=wf_id
            )
        else:
            track.task_id, track.origin = originating_task(self.config)
            track.handle = await start_pipeline(
                self.client,
                self.config,
                track.task_id,
                workflow_id=wf_id,
                build_name=track.case.name,
            )

    async def parked(self, track: Track) -> bool:
        """At its next hold (held task written, or at the gate), or finished: nothing of it
        is in flight in the worker, so a kill interrupts no short activity."""
        assert track.handle is not None
        hold = track.next_hold()
        if hold is None:
            return await is_closed(track.handle)
        if hold in (GATE_FILE, GATE_UPDATE):
            return (await status_of(track.handle)).stage == "awaiting-approval"
        return hold in track.held

    async def all_parked(self, tracks: list[Track]) -> bool:
        for track in tracks:
            if not await self.parked(track):
                return False
        return True

    async def kill_round(self, rnd: int, agent: ScriptedAgent) -> None:
        """Wait until every live workflow is parked, kill -9 the worker; while none runs,
        answer the held tasks, approve by file, start what starts now; restart, then approve
        by update."""
        live = [t for t in self.tracks if t.handle is not None]
        await wait_for(
            partial(self.all_parked, live), 90, what=f"every workflow parked for kill round {rnd}"
        )
        await self.worker.kill9()
        # --- no worker runs: answers, approvals, a new workflow ---
        releases = []
        for track in live:
            hold = track.case.holds.get(rnd)
            if hold is None or hold == GATE_UPDATE:
                continue
            if hold == GATE_FILE:
                assert track.origin is not None
                approve_by_file(track.origin, actor="operator-file", note="ok")
            else:
                path, task = track.held[hold]
                releases.append(agent.complete_now(path, *track.answer(task)))
        for code in await asyncio.gather(*releases):
            self.down_answers[code] += 1
        for track in self.tracks:
            if track.case.start_round == rnd:
                await self.start(track)
            if rnd in track.case.holds:
                track.released.add(rnd)  # from now on, its next hold applies
        assert not self.worker.alive()
        self.restarts.append(await self.worker.start())
        for track in live:
            if track.case.holds.get(rnd) == GATE_UPDATE:
                assert track.handle is not None
                t0 = time.monotonic()
                await track.handle.execute_update("approve", DecisionInput(by="bob"))
                self.update_latency = time.monotonic() - t0


@pytest.mark.slow
async def test_kill9_at_every_stage_boundary(
    client: Client, address: str, tmp_path: Path, figures: Figures
) -> None:
    """Three kill -9 rounds over the workflows of KILL_CASES. Before each, every workflow is
    parked at a stage (or finished); answers, approvals and a new start arrive while no worker
    runs; the next run carries on.

    Held when killed: prefab, implement, audit, fixes, awaiting-approval, close and BuildPlan
    phases 1-3. Begun by a restarted worker after the downtime: prefab (started while down),
    implement, audit, triage, fixes, notify, awaiting-approval, close and summary.
    """
    config = make_config(tmp_path, address, block_poll_seconds=0.5)
    record = install_matrix_recorder(config)
    tracks = [Track(case) for case in KILL_CASES]
    worker = WorkerProcess(debug_env(config, tmp_path / "logs"), tmp_path / "logs")
    run = KillRun(client, config, worker, tracks)
    started = time.monotonic()
    gate_file_wait = 0.0
    try:
        await worker.start()
        async with ScriptedAgent(config.agent_task_dir, address, run.decide, parallel=4) as agent:
            run.agent = agent
            for track in tracks:
                if track.case.start_round is None:
                    await run.start(track)
            for rnd in range(KILL_ROUNDS):
                await run.kill_round(rnd, agent)
            gate_t0 = time.monotonic()
            results = {}
            for track in tracks:
                assert track.handle is not None
                results[track.case.name] = await asyncio.wait_for(track.handle.result(), 120)
                if track.case.name == "blocks-by-file":
                    gate_file_wait = time.monotonic() - gate_t0
    finally:
        await worker.stop()
    wall = time.monotonic() - started

    assert run.down_answers == Counter({0: 10}), run.down_answers  # the server took every answer
    assert agent.errors == []

    # every workflow finished, with the right summary
    for case in KILL_CASES:
        result = results[case.name]
        if case.plan:
            assert result == BuildPlanResult(status="complete", phases_run=3)
            continue
        assert result.status == "complete", (case.name, result)
        summary = summary_of(result.summary_path)
        assert summary["outcome"] == case.outcome, (case.name, summary)
        assert [p for p in summary["phases_completed"] if p != "triage"] == case.stages, case.name
        if case.resolution is not None:
            assert (summary["resolution"]["via"], summary["resolution"]["by"]) == case.resolution
    assert sorted(p.name for p in config.summary_dir.rglob("*.yml")) == sorted(
        f"{t.handle.id}.yml" for t in tracks if t.script is not None and t.handle is not None
    )

    # no stage dispatched twice: one task file per workflow and stage, and no other
    counts = dispatch_counts(config.agent_task_dir)
    assert set(counts.values()) == {1}, counts
    wanted = {(t.handle.id, s) for t in tracks if t.handle is not None for s in t.case.stages}
    assert set(counts) == wanted
    # one Matrix message per block, none repeated by a restarted worker
    actions = [
        m["message"].splitlines()[0]
        for m in matrix_messages(record)
        if m["message"].startswith("[ACTION]")
    ]
    assert sorted(actions) == [
        "[ACTION] blocks-by-file: block 1/1 needs review",
        "[ACTION] blocks-by-update: block 1/1 needs review",
    ]
    assert leftovers(config.agent_task_dir, config.audit_dir, config.summary_dir) == []
    assert_no_secrets(
        worker.outputs() + agent.outputs,
        harvest_tokens(config.agent_task_dir),
        figures=figures,
        area="kill -9",
    )

    # What each restarted run did first, per workflow: the stage its downtime led into.
    names = {t.handle.id: t.case.name for t in tracks if t.handle is not None}
    first: list[dict[str, str]] = []
    for worker_run in worker.runs[1:]:
        begun: dict[str, str] = {}
        for name, stage in _begun(worker_run, names):
            begun.setdefault(name, stage)
        first.append(begun)
    exact: list[dict[str, str]] = [{} for _ in range(KILL_ROUNDS)]
    for case in KILL_CASES:
        for rnd, expect in case.first_begun.items():
            if isinstance(expect, tuple):
                assert first[rnd].pop(case.name) in expect, first
            else:
                exact[rnd][case.name] = expect
    assert first == exact, first
    begun_after_kill = {stage for r in worker.runs[1:] for _, stage in _begun(r, names)}
    assert begun_after_kill >= set(BEGIN_EVENTS.values())

    figures.record(
        "kill -9",
        "kills / workflows / stages held at a kill",
        f"{KILL_ROUNDS} / {len(tracks)} / {sum(len(c.holds) for c in KILL_CASES)}",
    )
    figures.record("kill -9", "answers delivered while no worker ran (exit 0)", run.down_answers[0])
    figures.record("kill -9", "task files / dispatched twice", f"{sum(counts.values())} / 0")
    figures.record("kill -9", "worker restart to worker_started, max (s)", max(run.restarts))
    figures.record("kill -9", "update approval after restart (s)", run.update_latency)
    figures.record("kill -9", "file approval, restart to pipeline done (s)", gate_file_wait)
    figures.record("kill -9", "test wall time (s)", wall)


def _begun(run: WorkerRun, names: dict[str, str]) -> list[tuple[str, str]]:
    """(workflow name, stage) for every stage this run began, in order."""
    found = []
    for event in run.events():
        stage = BEGIN_EVENTS.get(event.get("event", ""))
        if stage and event.get("workflow_id") in names:
            found.append((names[event["workflow_id"]], stage))
    return found


def _more_than(items: list[Any], n: int) -> bool:
    return len(items) > n


def _began_since(worker: WorkerProcess, seen: int) -> bool:
    """Has the worker begun a stage since it had logged `seen` events?"""
    return any(e.get("event") in BEGIN_EVENTS for e in worker.events()[seen:])


# --- The Temporal server stopped and restarted under a running worker --------------------------


@pytest.mark.slow
async def test_server_restart_mid_pipeline(tmp_path: Path, figures: Figures) -> None:
    """A dev server on its SQLite file (WAL) goes away twice under a running worker: stopped with
    SIGTERM, then killed with SIGKILL, each time restarted on the same port and file.

    Answers sent while it is down fail with exit 3 and one line; sent again once it is back,
    they land. The worker process never restarts: it reconnects by itself and both pipelines
    (one parked at an agent stage, one at the block gate approved by file while the server was
    down) finish, with every stage dispatched once.
    """
    server = DevServer(tmp_path / "server", free_port())
    config = make_config(tmp_path, server.address, block_poll_seconds=0.5)
    install_matrix_recorder(config)
    flag, block = "pin the base image", "admin console on 0.0.0.0"
    scripts = {"agent": PipelineScript(flags=[flag]), "gate": PipelineScript(blocks=[block])}
    holds = {"agent": ["implement", "close"], "gate": []}
    held: dict[str, list[tuple[Path, dict[str, Any]]]] = {"agent": [], "gate": []}
    names: dict[str, str] = {}

    def decide(task: dict[str, Any]) -> tuple[str, str] | None:
        name = names[task["payload"]["workflow_id"]]
        if holds[name] and holds[name][0] == stage_of(task):
            holds[name].pop(0)
            held[name].append((agent.path_of(task), task))
            return None
        return scripts[name].decide(task)

    worker = WorkerProcess(debug_env(config, tmp_path / "logs"), tmp_path / "logs")
    down_codes: list[tuple[int, str]] = []
    reconnect: list[float] = []
    restart_times: list[float] = []
    try:
        await server.start()
        client = await server.connect()
        await worker.start()
        pid = worker.pid
        async with ScriptedAgent(
            config.agent_task_dir, server.address, decide, parallel=4
        ) as agent:
            handles: dict[str, WorkflowHandle] = {}
            for name in scripts:
                task_id, origin = originating_task(config)
                if name == "gate":
                    gate_origin = origin
                wf_id = f"restart-{name}-{uuid.uuid4().hex[:8]}"
                names[wf_id] = name
                handles[name] = await start_pipeline(
                    client, config, task_id, workflow_id=wf_id, build_name=name
                )

            for round_, how in enumerate(("stop", "kill")):
                await wait_for(partial(_more_than, held["agent"], round_), 60, what="a held task")
                if round_ == 0:
                    await wait_stage(handles["gate"], "awaiting-approval", 60)
                if how == "stop":
                    await server.stop()
                else:
                    await server.kill9()
                path, task = held["agent"][round_]
                code, _, err = await run_cli(
                    ["--task-file", str(path), "success", "late"], server.address
                )
                down_codes.append((code, stderr_line(err)))
                if round_ == 0:
                    approve_by_file(gate_origin, actor="operator-file")
                await asyncio.sleep(5)  # an outage long enough for the worker's polls to fail
                restart_times.append(await server.start())
                back = time.monotonic()
                assert worker.alive() and worker.pid == pid
                answer = scripts["agent"].decide(task)
                assert answer is not None
                assert await agent.complete_now(path, *answer) == 0
                await wait_for(
                    partial(_began_since, worker, len(worker.events())),
                    60,
                    what="the worker's next stage",
                )
                reconnect.append(time.monotonic() - back)
            results = {name: await asyncio.wait_for(h.result(), 90) for name, h in handles.items()}
    finally:
        await worker.stop()
        await server.stop()

    assert worker.pid == pid and len(worker.runs) == 1  # never restarted
    for code, line in down_codes:
        assert code == 3 and line.startswith("complete_activity: cannot reach Temporal"), line
    assert summary_of(results["agent"].summary_path)["outcome"] == "success"
    gate_summary = summary_of(results["gate"].summary_path)
    assert gate_summary["outcome"] == "partial"
    assert gate_summary["resolution"]["via"] == "task-file"
    counts = dispatch_counts(config.agent_task_dir)
    assert set(counts.values()) == {1}, counts
    assert sorted(s for _, s in counts) == sorted(
        [*PIPELINE_STAGES, "prefab", "implement", "audit", "close"]
    )
    assert leftovers(config.agent_task_dir, config.summary_dir) == []
    assert_no_secrets(
        worker.outputs() + agent.outputs + server.logs(),
        harvest_tokens(config.agent_task_dir),
        figures=figures,
        area="server restart",
    )
    figures.record("server restart", "restarts (SIGTERM, SIGKILL) / worker restarts", "2 / 0")
    figures.record(
        "server restart", "answers while down: exit codes", " ".join(str(c) for c, _ in down_codes)
    )
    figures.record("server restart", "server start, max (s)", max(restart_times))
    figures.record("server restart", "server back to next stage begun, max (s)", max(reconnect))


# --- Two workers on one task queue ---------------------------------------------------------------


async def test_two_workers_dispatch_each_stage_once(
    client: Client, address: str, tmp_path: Path, figures: Figures
) -> None:
    """Two worker.py processes poll one queue: both do work, and no stage is dispatched twice
    (every task file, Matrix message and summary exists exactly once)."""
    config = make_config(tmp_path, address, block_poll_seconds=0.5)
    record = install_matrix_recorder(config)
    flag, block = "drop the debug endpoint", "shared admin password"
    pipelines = 6
    script = {
        i: PipelineScript(flags=[flag], blocks=[block] if i % 3 == 0 else [])
        for i in range(pipelines)
    }
    names: dict[str, int] = {}

    def decide(task: dict[str, Any]) -> tuple[str, str] | None:
        index = names.get(task["payload"]["workflow_id"])
        if index is None:  # a BuildPlan phase
            return ("success", "phase-done")
        return script[index].decide(task)

    env = debug_env(config, tmp_path / "logs")
    workers = [WorkerProcess(env, tmp_path / "logs", name=f"worker{n}") for n in (1, 2)]
    update_latency: list[float] = []
    try:
        await asyncio.gather(*(w.start() for w in workers))
        async with ScriptedAgent(config.agent_task_dir, address, decide, parallel=4) as agent:
            handles: list[WorkflowHandle] = []
            for i in range(pipelines):
                task_id, _ = originating_task(config)
                wf_id = f"two-{i}-{uuid.uuid4().hex[:8]}"
                names[wf_id] = i
                handles.append(
                    await start_pipeline(
                        client, config, task_id, workflow_id=wf_id, build_name=f"two-{i}"
                    )
                )
            handles.append(
                await start_plan(client, config.task_queue, build_plan_input("kill-plan", 3))
            )

            async def approve_when_parked(handle: WorkflowHandle) -> None:
                await wait_stage(handle, "awaiting-approval", 60)
                t0 = time.monotonic()
                await handle.execute_update("approve", DecisionInput(by="carol"))
                update_latency.append(time.monotonic() - t0)

            await asyncio.gather(
                *(approve_when_parked(handles[i]) for i in range(pipelines) if script[i].blocks)
            )
            results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
    finally:
        await asyncio.gather(*(w.stop() for w in workers))

    assert agent.errors == [] and set(agent.codes) == {0}
    for i, result in enumerate(results[:pipelines]):
        summary = summary_of(result.summary_path)
        assert summary["outcome"] == ("partial" if script[i].blocks else "success")
    assert results[pipelines:] == [BuildPlanResult(status="complete", phases_run=3)]
    counts = dispatch_counts(config.agent_task_dir)
    assert set(counts.values()) == {1}, counts
    assert len(counts) == pipelines * len(PIPELINE_STAGES) + 3
    assert len(list(config.summary_dir.rglob("*.yml"))) == pipelines
    actions = [
        m["message"].splitlines()[0]
        for m in matrix_messages(record)
        if m["message"].startswith("[ACTION]")
    ]
    assert sorted(actions) == sorted(
        f"[ACTION] two-{i}: block 1/1 needs review" for i in range(pipelines) if script[i].blocks
    )
    share = [sum(1 for e in w.events() if e.get("event") in BEGIN_EVENTS) for w in workers]
    assert all(n > 0 for n in share), share  # both workers really took part
    assert_no_secrets(
        [t for w in workers for t in w.outputs()] + agent.outputs,
        harvest_tokens(config.agent_task_dir),
        figures=figures,
        area="two workers",
    )
    figures.record(
        "two workers",
        "workflows / task files / dispatched twice",
        f"{len(handles)} / {sum(counts.values())} / 0",
    )
    figures.record("two workers", "stages begun by worker 1 / worker 2", f"{share[0]} / {share[1]}")
    figures.record("two workers", "update approval, workers alive, max (s)", max(update_latency))


# --- Directories the worker cannot write: read-only, full disk, file size limit ----------------

# The longest plan path the input allows: a task file of ~9.5 KB, a summary of ~4.5 KB, so a
# write can fail half-way through one page-sized chunk.
LONG_PLAN = "/plans/" + "p" * 3985 + ".md"
FILE_SIZE_LIMIT = 8192


def _drop_dac() -> list[str]:
    """As root, permission bits do not stop writes: run without CAP_DAC_OVERRIDE."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("running as root and setpriv(1) is missing to drop CAP_DAC_OVERRIDE")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]


def _limit_file_size() -> None:  # runs in the child, before exec
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


@contextlib.contextmanager
def full_tmpfs(path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted at `path` (`fill` fills it), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip()}); "
            "the file-size-limit case covers a full disk"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path, free_pages: int) -> Path:
    """Fill the file system of `directory` but for `free_pages` pages; returns the filler."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * 4096):
                pass
    finally:
        os.close(fd)
    size = filler.stat().st_size
    os.truncate(filler, max(size - free_pages * 4096, 0))
    return filler


@pytest.mark.parametrize(
    "case", ["task-dir-read-only", "audit-dir-read-only", "task-dir-disk-full", "file-size-limit"]
)
async def test_unwritable_directories_fail_cleanly(
    case: str, client: Client, address: str, tmp_path: Path, figures: Figures
) -> None:
    """The stage that cannot write fails at once with the OS's reason; no temporary or partial
    file stays behind; the failure path still writes the summary (`outcome: failed`). The
    worker keeps running, and writes again once it can."""
    config = make_config(tmp_path, address, block_poll_seconds=0.5)
    install_matrix_recorder(config)
    env = debug_env(config, tmp_path / "logs")
    prefix: list[str] = []
    preexec = None
    stack = contextlib.ExitStack()
    expect_stage, expect_reason = "prefab", "Permission denied"
    broken = config.agent_task_dir
    filler: Path | None = None
    if case == "task-dir-read-only":
        task_files.ensure_private_dir(config.agent_task_dir)
        config.agent_task_dir.chmod(0o500)
        prefix = _drop_dac()
    elif case == "audit-dir-read-only":
        config.audit_dir.mkdir(mode=0o500)
        broken, expect_stage = config.audit_dir, "audit"
        prefix = _drop_dac()
    elif case == "task-dir-disk-full":
        stack.enter_context(full_tmpfs(config.agent_task_dir))
        filler = fill(config.agent_task_dir, free_pages=1)
        expect_reason = "No space left on device"
    else:
        preexec = _limit_file_size
        env.update(LOG_LEVEL="INFO")
        del env["LOG_FILE"]  # the limit holds for every file the worker writes
        expect_reason = "File too large"

    worker = WorkerProcess(env, tmp_path / "logs", prefix=prefix, preexec=preexec)
    script = PipelineScript(flags=["x"])
    try:
        with stack:
            await worker.start()
            async with ScriptedAgent(
                config.agent_task_dir, address, script.decide, parallel=4
            ) as agent:
                handle = await start_pipeline(
                    client, config, "t-1", build_name="nowrite", plan_path=LONG_PLAN
                )
                t0 = time.monotonic()
                with pytest.raises(WorkflowFailureError) as caught:
                    await asyncio.wait_for(handle.result(), 60)
                failed_after = time.monotonic() - t0
                left = sorted(p.name for p in broken.rglob("*") if p.is_file())

                # the worker is still there, and writes once it can
                assert worker.alive()
                if case == "file-size-limit":
                    plan_path = "/plans/small.md"  # files under the limit still work
                else:
                    plan_path = LONG_PLAN
                    broken.chmod(0o700)
                    if filler is not None:
                        filler.unlink()
                again_handle = await start_pipeline(
                    client, config, "t-2", build_name="nowrite-again", plan_path=plan_path
                )
                again = await asyncio.wait_for(again_handle.result(), 90)
                tasks_after = len(dispatch_counts(config.agent_task_dir))
                tokens = harvest_tokens(config.agent_task_dir)  # before the tmpfs goes
    finally:
        await worker.stop()

    cause = caught.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "StageFailedError"  # the stage failed for a reason not its agent's
    assert cause.message.startswith(f"{expect_stage} failed: "), cause.message
    assert expect_reason in cause.message, cause.message
    reason = cause.message.split(" failed: ", 1)[1].rsplit(" (summary: ", 1)[0]
    summary = summary_of(cause.message.rsplit("(summary: ", 1)[1].rstrip(")"))
    assert (summary["outcome"], summary["failed_stage"]) == ("failed", expect_stage)
    assert summary["error"] == reason
    # nothing half-written: no temporary file, no task file of the failed stage
    assert not [n for n in left if n.endswith(".tmp") or n.endswith(".yml")], left
    if case == "audit-dir-read-only":
        assert not (config.audit_dir / "nowrite").exists()
    assert summary_of(again.summary_path)["outcome"] == "success"
    # the first pipeline's stages before the failed one, and all five of the second
    assert tasks_after == (2 if case == "audit-dir-read-only" else 0) + 5
    assert failed_after < 30
    assert agent.errors == []
    assert_no_secrets(
        worker.outputs() + agent.outputs,
        tokens,
        figures=figures,
        area="unwritable",
        label=f"{case}: ",
    )
    figures.record(
        "unwritable", f"{case}: failed at / after (s)", f"{expect_stage} / {failed_after:.1f}"
    )
    figures.record("unwritable", f"{case}: error", reason.rsplit(": ", 1)[1])
