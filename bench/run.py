"""`make bench`: the worker's overheads as ratios against bare Temporal, on one dev server.

    python -m bench.run [--quick] [--only P1,P3] [--json PATH]

Each figure is measured for the real worker (`worker.py` as a subprocess, agents completing with
`complete_activity.py` where the figure is about it) and for the bare baseline (`bench.bare`), in
the same run, on the same server, interleaved, several repetitions; the table shows medians with
min-max, the JSON every sample. bench/README.md says what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import temporalio
from temporalio.client import Client, WorkflowHandle

from activities import task_files
from bench.agent import RESULT, Agent
from bench.server import PYTHON, start_worker, stop_process, wait_polling
from config import WorkerConfig
from harness.env import ROOT, cli_env, free_port
from harness.pipelines import originating_task, pipeline_input
from harness.temporal_server import DevServer

SIDES = ("worker", "bare")
FIGURES = ("P1", "P2", "P3", "P4", "P5", "P6", "P7")
BLOCK_TRIAGE = {"blocks": ["bench block"], "flags": []}  # the audit's triage that parks a pipeline


@dataclass
class Settings:
    """How much of everything: the full run, or --quick for checking the harness."""

    quick: bool
    handoff_pipelines: int = 8  # P1: 2 agent-to-agent handoffs each
    cli_runs: int = 10  # P2, per side
    pipelines: int = 200  # P3
    throughput_reps: int = 3
    parked: int = 2000  # P4
    parked_warmup: int = 50
    approvals: int = 5  # P5, per kind and side
    poll_seconds: float = 300.0  # BLOCK_POLL_SECONDS for P5 and P7: the default
    parked_cost: int = 2000  # P7
    rest_settle: float = 30.0  # P7: after the last one parked, before measuring
    rest_window: float = 10.0  # P7: CPU sampled over rest_windows windows of this length
    rest_windows: int = 6
    starts: int = 5  # P6, per side
    stall_seconds: float = 60.0
    settle_seconds: float = 5.0  # P4: wait before reading RSS, and CPU sampling time

    @classmethod
    def make(cls, quick: bool) -> Settings:
        if not quick:
            return cls(quick=False)
        return cls(
            quick=True,
            handoff_pipelines=2,
            cli_runs=3,
            pipelines=12,
            throughput_reps=1,
            parked=40,
            parked_warmup=10,
            approvals=2,
            starts=2,
            stall_seconds=15.0,
            settle_seconds=1.0,
            parked_cost=40,
            rest_settle=2.0,
            rest_window=2.0,
            rest_windows=3,
        )


def summary(samples: list[float]) -> dict[str, Any]:
    """Median and spread (min, max, quartiles) of one side's samples."""
    ordered = sorted(samples)
    if not ordered:
        return {"n": 0}
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else ordered * 3
    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "p25": quartiles[0],
        "p75": quartiles[2],
        "samples": samples,
    }


@dataclass
class Figure:
    key: str
    name: str
    unit: str
    worker: list[float]
    bare: list[float]
    target: str
    higher_is_better: bool = False
    judge: Callable[[dict[str, Any], float], bool] | None = None  # (worker stats, ratio) -> met
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        w, b = summary(self.worker), summary(self.bare)
        ratio = (w["median"] / b["median"]) if w.get("median") and b.get("median") else None
        met = self.judge(w, ratio) if self.judge and ratio is not None else None
        return {
            "name": self.name,
            "unit": self.unit,
            "worker": w,
            "bare": b,
            "ratio": ratio,
            "higher_is_better": self.higher_is_better,
            "target": self.target,
            "target_met": met,
            "notes": self.notes,
            **self.extra,
        }


@dataclass
class Parking:
    """One side's worker and gate agent, for the figures that park pipelines at the gate."""

    bench: Bench
    side: str
    queue: str
    workdir: Path
    proc: subprocess.Popen[bytes]
    agent: Agent

    async def start(self, count: int, workflow: str) -> None:
        await self.bench.start_pipelines(
            self.side, self.queue, self.workdir, self.agent, count, workflow
        )

    async def park(self, count: int, workflow: str, total: int) -> tuple[int, float]:
        """Start `count` more and wait until `total` are parked, or parking stalls: how many
        are parked, and the seconds that took."""
        started = time.monotonic()
        await self.start(count, workflow)
        reached = await wait_progress(
            partial(len, self.agent.gated), total, self.bench.s.stall_seconds
        )
        return reached, time.monotonic() - started


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.s = Settings.make(args.quick)
        if args.pipelines:
            self.s.pipelines = args.pipelines
        if args.parked:
            self.s.parked = self.s.parked_cost = args.parked
        self.only = set(args.only.split(",")) if args.only else set(FIGURES)
        self.profile = set(args.profile.split(",")) if args.profile else set()
        self.current = ""
        self.server_pid = 0
        self.tag = uuid.uuid4().hex[:6]
        self.figures: list[Figure] = []
        self.load: dict[str, Any] = {}
        self.address = ""
        self.client: Client
        self.workdir: Path
        self._n = 0

    def fresh(self, what: str) -> str:
        self._n += 1
        return f"bench-{self.tag}-{what}-{self._n}"

    # --- processes ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def worker(
        self, side: str, poll: float = 30.0, slots: int | None = None
    ) -> AsyncIterator[tuple[str, Path, subprocess.Popen[bytes]]]:
        """A worker process of `side` on a fresh queue and directory, polling when yielded."""
        queue = self.fresh(f"q-{side}")
        workdir = self.workdir / queue
        proc = start_worker(side, self.address, queue, workdir, poll, slots)
        spy = None
        try:
            await wait_polling(self.client, queue, proc)
            if side == "worker" and self.current in self.profile:
                out = ROOT / "bench" / f"profile-{self.current}.txt"
                spy = subprocess.Popen(
                    [
                        str(Path(PYTHON).parent / "py-spy"),
                        "record",
                        "--pid",
                        str(proc.pid),
                        "--format",
                        "raw",
                        "--rate",
                        "200",
                        "--output",
                        str(out),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            yield queue, workdir, proc
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                await asyncio.to_thread(spy.wait)
            await asyncio.to_thread(stop_process, proc)

    async def start_pipelines(
        self,
        side: str,
        queue: str,
        workdir: Path,
        agent: Agent,
        count: int,
        workflow: str = "BarePipeline",
    ) -> list[WorkflowHandle[Any, Any]]:
        """Start `count` pipelines at once (their originating task files first)."""
        config = WorkerConfig(agent_task_dir=workdir / "task-queue")
        gate = asyncio.Semaphore(50)

        async def one(i: int) -> WorkflowHandle[Any, Any]:
            wf = self.fresh("wf")
            async with gate:
                if side == "bare":
                    return await self.client.start_workflow(workflow, id=wf, task_queue=queue)
                task_id, path = originating_task(config)
                agent.origins[path.name] = wf
                return await self.client.start_workflow(
                    "BuildPipelineWorkflow",
                    pipeline_input(task_id, build_name=f"b-{self.tag}-{self._n}-{i}"),
                    id=wf,
                    task_queue=queue,
                )

        return list(await asyncio.gather(*(one(i) for i in range(count))))

    @contextlib.asynccontextmanager
    async def parking(
        self, side: str, poll: float = 30.0, slots: int | None = None
    ) -> AsyncIterator[Parking]:
        """A worker of `side` and an agent that completes the first three stages with a block
        in the audit, so that every pipeline started parks at the gate."""
        async with self.worker(side, poll, slots) as (queue, workdir, proc):
            agent = Agent(
                side, self.client, workdir / "task-queue", complete={1, 2, 3}, triage=BLOCK_TRIAGE
            )
            async with agent:
                yield Parking(self, side, queue, workdir, proc, agent)

    # --- P6 ------------------------------------------------------------------------------------

    async def p6_start(self) -> Figure:
        samples: dict[str, list[float]] = {s: [] for s in SIDES}
        for rep in range(self.s.starts):
            for side in SIDES if rep % 2 == 0 else SIDES[::-1]:
                queue = self.fresh(f"start-{side}")
                started = time.monotonic()
                proc = start_worker(side, self.address, queue, self.workdir / queue, 30.0)
                try:
                    polled = await wait_polling(self.client, queue, proc, interval=0.005)
                finally:
                    await asyncio.to_thread(stop_process, proc)
                samples[side].append(polled - started)
        return Figure(
            "P6",
            "worker start: process start to polling the task queue",
            "s",
            samples["worker"],
            samples["bare"],
            "worker median <= 2 s",
            judge=lambda w, r: w["median"] <= 2.0,
        )

    # --- P2 ------------------------------------------------------------------------------------

    async def p2_cli(self) -> list[Figure]:
        runs = self.s.cli_runs
        async with self.worker("bare") as (queue, workdir, _):
            async with Agent("bare", self.client, workdir / "task-queue", complete=set()) as ag:
                wf = self.fresh("tokens")
                count = 2 * runs + 2
                await self.client.start_workflow("BareTokens", count, id=wf, task_queue=queue)
                await ag.wait(lambda: len(ag.tokens) >= count, 60, "tokens")
                tokens = [base64.b64encode(t).decode() for t in ag.tokens.values()]
                env = cli_env(self.address)

                def command(side: str, token: str) -> list[str]:
                    if side == "worker":
                        return [str(ROOT / "complete_activity.py"), token, "success", "bench"]
                    return [str(ROOT / "bench" / "baseline_complete.py"), token, "bench"]

                async def run(side: str, *flags: str) -> tuple[float, str]:
                    started = time.monotonic()
                    proc = await asyncio.create_subprocess_exec(
                        PYTHON,
                        *flags,
                        *command(side, tokens.pop()),
                        cwd=tempfile.gettempdir(),
                        env=env,
                        stdout=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.PIPE,
                    )
                    _, err = await proc.communicate()
                    took = time.monotonic() - started
                    if proc.returncode != 0:
                        said = [
                            ln
                            for ln in err.decode().splitlines()
                            if not ln.startswith("import time:")
                        ]
                        raise RuntimeError(
                            f"P2 {side} exited {proc.returncode}: " + "\n".join(said[-20:])
                        )
                    return took, err.decode()

                samples: dict[str, list[float]] = {s: [] for s in SIDES}
                for rep in range(runs):
                    for side in SIDES if rep % 2 == 0 else SIDES[::-1]:
                        samples[side].append((await run(side))[0])
                imports = {
                    side: import_time((await run(side, "-X", "importtime"))[1]) for side in SIDES
                }
        figure = Figure(
            "P2",
            "completion CLI: wall time of one `complete_activity.py <token> success msg` process",
            "s",
            samples["worker"],
            samples["bare"],
            "ratio <= 1.25",
            judge=lambda w, r: r <= 1.25,
        )
        figure.extra["import_time_s"] = imports
        return [
            figure,
            Figure(
                "P2i",
                "completion CLI: import time (python -X importtime, all imports of a run)",
                "s",
                [imports["worker"]],
                [imports["bare"]],
                "reported (no target)",
            ),
        ]

    # --- P1 ------------------------------------------------------------------------------------

    async def p1_handoff(self) -> Figure:
        samples: dict[str, list[float]] = {s: [] for s in SIDES}
        env = cli_env(self.address)
        async with (
            self.worker("worker") as (wq, wdir, _),
            self.worker("bare") as (bq, bdir, _),
            Agent("worker", self.client, wdir / "task-queue", complete=set()) as wag,
            Agent("bare", self.client, bdir / "task-queue", complete=set()) as bag,
        ):
            for rep in range(self.s.handoff_pipelines + 1):  # the first one warms up
                for side in SIDES if rep % 2 == 0 else SIDES[::-1]:
                    agent = wag if side == "worker" else bag
                    queue, workdir = (wq, wdir) if side == "worker" else (bq, bdir)
                    (handle,) = await self.start_pipelines(side, queue, workdir, agent, 1)
                    wf = handle.id
                    await agent.arrival(wf, 1)
                    for stage, nxt in ((1, 2), (2, 3)):
                        token = agent.tokens[(wf, stage)]
                        if side == "worker":
                            proc = await asyncio.create_subprocess_exec(
                                PYTHON,
                                str(ROOT / "complete_activity.py"),
                                base64.b64encode(token).decode(),
                                "success",
                                "bench",
                                env=env,
                                stdout=asyncio.subprocess.DEVNULL,
                            )
                            if await proc.wait() != 0:
                                raise RuntimeError("P1: complete_activity.py failed")
                        else:
                            await self.client.get_async_activity_handle(task_token=token).complete(
                                RESULT
                            )
                        returned = time.monotonic()
                        arrived = await agent.arrival(wf, nxt)
                        if rep > 0:
                            samples[side].append(arrived - returned)
                    await handle.terminate("bench: measured")
        return Figure(
            "P1",
            "stage handoff: completion returned -> next stage's task file on disk",
            "s",
            samples["worker"],
            samples["bare"],
            "ratio <= 1.5",
            judge=lambda w, r: r <= 1.5,
            notes=[
                "worker side: complete_activity.py process exit; bare side: "
                "AsyncActivityHandle.complete() returning"
            ],
        )

    # --- P5 ------------------------------------------------------------------------------------

    async def p5_approval(self) -> list[Figure]:
        poll = self.s.poll_seconds
        n = self.s.approvals
        by_update: dict[str, list[float]] = {s: [] for s in SIDES}
        by_file: dict[str, list[float]] = {s: [] for s in SIDES}
        async with (
            self.worker("worker", poll) as (wq, wdir, _),
            self.worker("bare", poll) as (bq, bdir, _),
            Agent(
                "worker",
                self.client,
                wdir / "task-queue",
                complete={1, 2, 3, 8},
                triage={"blocks": ["bench block"], "flags": []},
            ) as wag,
            Agent("bare", self.client, bdir / "task-queue", complete={8}) as bag,
        ):
            handles = {
                "worker": await self.start_pipelines("worker", wq, wdir, wag, 2 * n),
                "bare": await self.start_pipelines("bare", bq, bdir, bag, 2 * n, "BareGate"),
            }
            agents = {"worker": wag, "bare": bag}
            for side in SIDES:
                await agents[side].wait(
                    partial(gated_at_least, agents[side], 2 * n), 120, f"P5 {side} parked"
                )
            await asyncio.sleep(1.0)  # let each gate's poller start
            for i in range(n):
                for side in SIDES if i % 2 == 0 else SIDES[::-1]:
                    handle = handles[side][i]
                    started = time.monotonic()
                    await handle.execute_update("approve")
                    by_update[side].append(await agents[side].arrival(handle.id, 8) - started)
            for side in SIDES:
                approved: dict[str, float] = {}
                for handle in handles[side][n:]:
                    approved[handle.id] = time.monotonic()
                    if side == "worker":
                        origin = next(name for name, wf in wag.origins.items() if wf == handle.id)
                        approve_file(wdir / "task-queue" / origin)
                    else:
                        (bdir / "task-queue" / f"{handle.id}.approved").touch()
                for wf, at in approved.items():
                    by_file[side].append(await agents[side].arrival(wf, 8, poll + 60) - at)
        update = Figure(
            "P5a",
            "approval by update `approve` -> close-out task file on disk",
            "s",
            by_update["worker"],
            by_update["bare"],
            "worker median <= 0.3 s",
            judge=lambda w, r: w["median"] <= 0.3,
        )
        by_file_fig = Figure(
            "P5b",
            f"approval by task file -> close-out task file on disk "
            f"(BLOCK_POLL_SECONDS={poll:g}, the default)",
            "s",
            by_file["worker"],
            by_file["bare"],
            "worker max <= 1 s",
            judge=lambda w, r: w["max"] <= 1.0,
            notes=["bare: a watchfiles watcher sending `approve` when the file appears"],
        )
        return [update, by_file_fig]

    # --- P3 ------------------------------------------------------------------------------------

    async def p3_throughput(self) -> Figure:
        n = self.s.pipelines
        rates: dict[str, list[float]] = {s: [] for s in SIDES}
        events: dict[str, Any] = {}
        triage = {"blocks": ["bench block"], "flags": ["bench flag"]}
        cpu: dict[str, dict[str, list[float]]] = {
            s: {"worker": [], "server": [], "bench": []} for s in SIDES
        }
        async with (
            self.worker("worker") as (wq, wdir, wproc),
            self.worker("bare") as (bq, bdir, bproc),
            Agent(
                "worker",
                self.client,
                wdir / "task-queue",
                complete={1, 2, 3, 5, 8},
                approve=True,
                triage=triage,
            ) as wag,
            Agent(
                "bare", self.client, bdir / "task-queue", complete={1, 2, 3, 5, 8}, approve=True
            ) as bag,
        ):
            for rep in range(self.s.throughput_reps):
                for side in SIDES if rep % 2 == 0 else SIDES[::-1]:
                    agent = wag if side == "worker" else bag
                    queue, workdir = (wq, wdir) if side == "worker" else (bq, bdir)
                    procs = {
                        "worker": psutil.Process((wproc if side == "worker" else bproc).pid),
                        "server": psutil.Process(self.server_pid),
                        "bench": psutil.Process(),
                    }
                    cpu_before = {k: cpu_seconds(p) for k, p in procs.items()}
                    started = time.monotonic()
                    handles = await self.start_pipelines(side, queue, workdir, agent, n)
                    results = await asyncio.wait_for(
                        asyncio.gather(*(h.result() for h in handles), return_exceptions=True), 600
                    )
                    took = time.monotonic() - started
                    failed = [r for r in results if isinstance(r, BaseException)]
                    if failed:
                        raise RuntimeError(f"P3 {side}: {len(failed)} failed: {failed[0]!r}")
                    rates[side].append(n / took)
                    for k, p in procs.items():
                        cpu[side][k].append((cpu_seconds(p) - cpu_before[k]) / n * 1000)
                    if side not in events:
                        events[side] = await history_length(handles[0])
            errors = wag.errors + bag.errors
        figure = Figure(
            "P3",
            f"throughput: {n} pipelines at once, instant agents",
            "pipelines/s",
            rates["worker"],
            rates["bare"],
            "ratio >= 0.7",
            higher_is_better=True,
            judge=lambda w, r: r >= 0.7,
            notes=[
                "agents and operator complete/approve through the bench's client, "
                "identically for both sides"
            ],
        )
        figure.extra["history_events_per_pipeline"] = events
        figure.extra["cpu_ms_per_pipeline"] = {
            side: {k: statistics.median(v) for k, v in by.items()} for side, by in cpu.items()
        }
        figure.extra["agent_errors"] = errors[:5]
        return figure

    # --- P4 ------------------------------------------------------------------------------------

    async def p4_memory(self) -> Figure:
        total = self.s.parked
        per: dict[str, list[float]] = {s: [] for s in SIDES}
        detail: dict[str, Any] = {}
        for side in ("bare", "worker"):
            detail[side] = await self._park(side)
            parked = detail[side]["parked"] - self.s.parked_warmup
            growth = detail[side]["rss_after_mib"] - detail[side]["rss_before_mib"]
            per[side].append(growth * 1024 / parked if parked > 0 else 0.0)
        figure = Figure(
            "P4",
            f"memory: worker RSS growth per pipeline parked at the block gate ({total} parked)",
            "KiB",
            per["worker"],
            per["bare"],
            "worker <= 64 KiB each",
            judge=lambda w, r: w["median"] <= 64,
            notes=[
                "bare: wait_condition raced with a running heartbeating activity",
                "idle_cpu_percent: the worker's CPU over "
                f"{self.s.settle_seconds:g} s with all parked",
            ],
        )
        figure.extra["detail"] = detail
        if detail["worker"]["stalled"]:
            figure.notes.append(f"worker side STALLED at {detail['worker']['parked']} parked")
        return figure

    async def _park(self, side: str) -> dict[str, Any]:
        """Park `parked` pipelines at the gate; RSS after the warm-up ones and after all."""
        total, warm, settle = self.s.parked, self.s.parked_warmup, self.s.settle_seconds
        slots = total + 200 if side == "bare" else None
        async with self.parking(side, slots=slots) as gate:
            await gate.start(warm, "BareGate")
            await gate.agent.wait(lambda: len(gate.agent.gated) >= warm, 120, "P4 warm-up")
            await asyncio.sleep(settle)
            before = await rss(gate.proc.pid)
            reached, took = await gate.park(total - warm, "BareGate", total)
            await asyncio.sleep(settle)
            after = await rss(gate.proc.pid)
            cpu = await cpu_percent(gate.proc.pid, settle)
        return {
            "parked": reached,
            "stalled": reached < total,
            "seconds_to_park": took,
            "rss_before_mib": before / 2**20,
            "rss_after_mib": after / 2**20,
            "idle_cpu_percent": cpu,
        }

    # --- P7 ------------------------------------------------------------------------------------

    async def p7_parked_cost(self) -> Figure:
        """Server plus worker CPU at rest with `parked_cost` parked at the gate, against the
        same count parked on a timer alone (`BareTimerGate`); the bare side parks first, so the
        worker side is measured with the twin's workflows still on the server."""
        total, poll = self.s.parked_cost, self.s.poll_seconds
        percent: dict[str, list[float]] = {s: [] for s in SIDES}
        detail: dict[str, Any] = {}
        for side in ("bare", "worker"):
            async with self.parking(side, poll) as gate:
                reached, took = await gate.park(total, "BareTimerGate", total)
                await asyncio.sleep(self.s.rest_settle)
                windows = await cpu_windows(
                    {"server": self.server_pid, "worker": gate.proc.pid},
                    self.s.rest_window,
                    self.s.rest_windows,
                )
            percent[side] = [w["server"] + w["worker"] for w in windows]
            detail[side] = {
                "parked": reached,
                "seconds_to_park": took,
                "windows": windows,
                **{k: statistics.median(w[k] for w in windows) for k in ("server", "worker")},
            }
        figure = Figure(
            "P7",
            f"parked cost: server + worker CPU at rest, {total} parked "
            f"(BLOCK_POLL_SECONDS={poll:g})",
            "% of a core",
            percent["worker"],
            percent["bare"],
            "ratio <= 2 and worker <= 10%",
            judge=lambda w, r: r <= 2 and w["median"] <= 10,
            notes=[
                "bare: the same count parked on a 7-day wait_condition timer alone",
                f"{self.s.rest_windows} windows of {self.s.rest_window:g} s, "
                f"{self.s.rest_settle:g} s after the last one parked",
            ],
        )
        figure.extra["detail"] = detail
        if reached < total:
            figure.notes.append(f"worker side STALLED at {reached} parked")
        return figure

    # --- the run -------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            self.workdir = Path(tmp)
            server = DevServer(self.workdir / "server", free_port())
            await server.start()
            try:
                self.address = server.address
                assert server.proc is not None
                self.server_pid = server.proc.pid
                self.client = await server.connect()
                steps: list[tuple[str, Callable[[], Awaitable[Figure | list[Figure]]]]] = [
                    ("P6", self.p6_start),
                    ("P2", self.p2_cli),
                    ("P1", self.p1_handoff),
                    ("P5", self.p5_approval),
                    ("P3", self.p3_throughput),
                    ("P7", self.p7_parked_cost),
                    ("P4", self.p4_memory),
                ]
                for key, step in steps:
                    if key not in self.only:
                        continue
                    print(f"bench: {key} ...", flush=True)
                    self.current = key
                    load_before = os.getloadavg()[0]
                    started = time.monotonic()
                    result = await step()
                    for fig in result if isinstance(result, list) else [result]:
                        self.figures.append(fig)
                    self.load[key] = {
                        "loadavg_1m_before": load_before,
                        "loadavg_1m_after": os.getloadavg()[0],
                        "seconds": time.monotonic() - started,
                    }
                    print_figures([f for f in self.figures if f.key.startswith(key)])
            finally:
                await server.stop()
        order = {
            k: i for i, k in enumerate(("P1", "P2", "P2i", "P3", "P4", "P5a", "P5b", "P6", "P7"))
        }
        self.figures.sort(key=lambda f: order.get(f.key, 99))
        return {
            "meta": meta(self.s),
            "load": self.load,
            "figures": {f.key: f.as_json() for f in self.figures},
        }


# --- helpers ---------------------------------------------------------------------------------


def approve_file(path: Path) -> None:
    """An operator's approval, written atomically (an editor's save is a rename, too)."""
    task = task_files.load_task(path)
    task["status"] = task_files.APPROVED
    task.setdefault("history", []).append(
        task_files.history_entry(task_files.APPROVED, "approved by the benchmark", actor="bench")
    )
    task_files.write_text_atomic(path, task_files.dump_yaml(task), 0o644)


def gated_at_least(agent: Agent, count: int) -> bool:
    return len(agent.gated) >= count


def import_time(stderr: str) -> float:
    """Seconds of all top-level imports in a `python -X importtime` run's stderr."""
    total = 0
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|", 2)
        if not name.startswith("  "):  # " name": a top-level import; deeper ones are indented
            total += int(cumulative)
    return total / 1e6


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def history_length(handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    """Events in one pipeline's history, and how many of each type."""
    from temporalio.api.enums.v1 import EventType

    events = (await handle.fetch_history()).events
    kinds: dict[str, int] = {}
    for event in events:
        name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        kinds[name] = kinds.get(name, 0) + 1
    return {"total": len(events), "by_type": dict(sorted(kinds.items()))}


async def rss(pid: int, samples: int = 5) -> float:
    """Median RSS (bytes) of `pid` over `samples` readings 0.4 s apart."""
    proc = psutil.Process(pid)
    values = []
    for _ in range(samples):
        values.append(proc.memory_info().rss)
        await asyncio.sleep(0.4)
    return float(statistics.median(values))


async def cpu_percent(pid: int, seconds: float) -> float:
    proc = psutil.Process(pid)
    proc.cpu_percent(None)
    await asyncio.sleep(seconds)
    return float(proc.cpu_percent(None))


async def cpu_windows(pids: dict[str, int], seconds: float, count: int) -> list[dict[str, float]]:
    """CPU of each process over `count` consecutive windows, in % of one core."""
    procs = {name: psutil.Process(pid) for name, pid in pids.items()}
    windows = []
    for _ in range(count):
        before = {name: cpu_seconds(p) for name, p in procs.items()}
        started = time.monotonic()
        await asyncio.sleep(seconds)
        took = time.monotonic() - started
        windows.append(
            {name: (cpu_seconds(p) - before[name]) / took * 100 for name, p in procs.items()}
        )
    return windows


async def wait_progress(count: Callable[[], int], total: int, stall: float) -> int:
    """Wait until count() reaches total, or has not moved for `stall` seconds; returns it."""
    last, moved = count(), time.monotonic()
    while last < total:
        await asyncio.sleep(0.5)
        now = count()
        if now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved > stall:
            break
    return last


def meta(settings: Settings) -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "temporalio": temporalio.__version__,
        "quick": settings.quick,
        "settings": {k: v for k, v in vars(settings).items()},
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def fmt(stats: dict[str, Any], unit: str) -> str:
    if not stats.get("n"):
        return "-"
    scale, suffix = (1000.0, "ms") if unit == "s" and stats["max"] < 10 else (1.0, unit)
    m, lo, hi = (stats[k] * scale for k in ("median", "min", "max"))
    return f"{m:.3g} {suffix} ({lo:.3g}-{hi:.3g})"


def print_figures(figures: list[Figure]) -> None:
    for fig in figures:
        data = fig.as_json()
        ratio = f"{data['ratio']:.2f}x" if data["ratio"] is not None else "-"
        met = {True: "met", False: "NOT MET", None: ""}[data["target_met"]]
        worker, bare = fmt(data["worker"], fig.unit), fmt(data["bare"], fig.unit)
        print(
            f"  {fig.key:4} {fig.name}\n       worker {worker:32} bare {bare:32}"
            f" ratio {ratio:7} target: {fig.target} {met}",
            flush=True,
        )
        for note in fig.notes:
            print(f"       note: {note}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="small counts: checks the harness in under a minute"
    )
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(FIGURES)}")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results.json"))
    parser.add_argument("--pipelines", type=int, help="P3: pipelines at once (200)")
    parser.add_argument("--parked", type=int, help="P4 and P7: pipelines parked (2000)")
    parser.add_argument(
        "--profile",
        metavar="FIGURES",
        help="record the worker process with py-spy during these figures "
        "(collapsed stacks in bench/profile-<figure>.txt)",
    )
    args = parser.parse_args()
    bench = Bench(args)
    result = asyncio.run(bench.run())
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nbench: {len(result['figures'])} figures, written to {args.json}")
    print_figures(bench.figures)
    os._exit(0)  # the Temporal runtime can crash in interpreter teardown (docs/DESIGN.md)


if __name__ == "__main__":
    main()
