"""What every figure shares: the settings, the figure and its statistics, and the run's context
(the dev server, the client, fresh names, the two sides' worker processes, pipeline starts).

Figures get the context as an argument, so each one reads on its own and depends only on this.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import statistics
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from bench.agent import Agent
from bench.server import PYTHON, start_worker, stop_process, wait_polling
from config import WorkerConfig
from harness.env import ROOT, free_port
from harness.pipelines import originating_task, pipeline_input
from harness.temporal_server import DevServer

SIDES = ("worker", "bare")


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
    """One row of the table: both sides' samples, and the target the ratio is judged by."""

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


def in_turn(rep: int) -> tuple[str, ...]:
    """Both sides, the order alternating by repetition, so neither is always measured first."""
    return SIDES if rep % 2 == 0 else SIDES[::-1]


@dataclass
class Context:
    """The run every figure measures in: one dev server, one client, one scratch directory."""

    settings: Settings
    client: Client
    address: str
    server_pid: int
    workdir: Path
    profile: set[str] = field(default_factory=set)  # figures whose worker side py-spy records
    current: str = ""  # the figure being measured
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    count: int = 0  # names handed out by fresh()

    def fresh(self, what: str) -> str:
        """A name no queue or workflow of this run (or of an earlier one) has had."""
        self.count += 1
        return f"bench-{self.tag}-{what}-{self.count}"

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
                spy = py_spy(proc.pid, ROOT / "bench" / f"profile-{self.current}.txt")
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
                    pipeline_input(task_id, build_name=f"b-{self.tag}-{self.count}-{i}"),
                    id=wf,
                    task_queue=queue,
                )

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy recording `pid` as raw collapsed stacks into `out` until it gets SIGINT."""
    return subprocess.Popen(
        [
            str(Path(PYTHON).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
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


@contextlib.asynccontextmanager
async def open_context(settings: Settings, profile: set[str]) -> AsyncIterator[Context]:
    """A dev server of the run's own in a temporary directory, and the context around it."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        server = DevServer(workdir / "server", free_port())
        await server.start()
        try:
            assert server.proc is not None
            yield Context(
                settings=settings,
                client=await server.connect(),
                address=server.address,
                server_pid=server.proc.pid,
                workdir=workdir,
                profile=profile,
            )
        finally:
            await server.stop()
