"""P3, throughput: pipelines a second with `pipelines` started at once and instant agents.

The worker runs all nine stages of each (flags and a block in the audit, the fixes, approval by
update, the close-out); the bare side runs `BarePipeline`, the same shape in the least Temporal
code. Agents and operator are the bench's own and the same for both sides, so the ratio is what
the worker's own work costs per pipeline. CPU per pipeline (worker, dev server, the bench) and
the history's events say where that cost is.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import psutil
from temporalio.client import WorkflowHandle

from bench.agent import Agent
from bench.common import SIDES, Context, Figure, in_turn
from bench.process_stats import cpu_seconds


async def measure(ctx: Context) -> Figure:
    """`throughput_reps` rounds per side, each timed from the first start to the last result."""
    n = ctx.settings.pipelines
    rates: dict[str, list[float]] = {s: [] for s in SIDES}
    events: dict[str, Any] = {}
    triage = {"blocks": ["bench block"], "flags": ["bench flag"]}
    cpu: dict[str, dict[str, list[float]]] = {
        s: {"worker": [], "server": [], "bench": []} for s in SIDES
    }
    async with (
        ctx.worker("worker") as (wq, wdir, wproc),
        ctx.worker("bare") as (bq, bdir, bproc),
        Agent(
            "worker",
            ctx.client,
            wdir / "task-queue",
            complete={1, 2, 3, 5, 8},
            approve=True,
            triage=triage,
        ) as wag,
        Agent(
            "bare", ctx.client, bdir / "task-queue", complete={1, 2, 3, 5, 8}, approve=True
        ) as bag,
    ):
        for rep in range(ctx.settings.throughput_reps):
            for side in in_turn(rep):
                agent = wag if side == "worker" else bag
                queue, workdir = (wq, wdir) if side == "worker" else (bq, bdir)
                procs = {
                    "worker": psutil.Process((wproc if side == "worker" else bproc).pid),
                    "server": psutil.Process(ctx.server_pid),
                    "bench": psutil.Process(),
                }
                cpu_before = {k: cpu_seconds(p) for k, p in procs.items()}
                started = time.monotonic()
                handles = await ctx.start_pipelines(side, queue, workdir, agent, n)
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


async def history_length(handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    """Events in one pipeline's history, and how many of each type."""
    from temporalio.api.enums.v1 import EventType

    events = (await handle.fetch_history()).events
    kinds: dict[str, int] = {}
    for event in events:
        name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        kinds[name] = kinds.get(name, 0) + 1
    return {"total": len(events), "by_type": dict(sorted(kinds.items()))}
