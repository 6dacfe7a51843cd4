"""P3, throughput: pipelines a second with `pipelines` started at once and instant agents.

The worker runs all nine stages of each (flags and a block in the audit, the fixes, approval by
update, the close-out); the bare side runs `BarePipeline`, the same shape in the least Temporal
code. Agents and operator are the bench's own and the same for both sides, so the ratio is what
the worker's own work costs per pipeline. CPU per pipeline (worker, dev server, the bench) and
the history's events say where that cost is.

P3h is the same runs' histories as a figure of its own: events per clean pipeline (the first
`HISTORIES_SAMPLED` pipelines of each side's first round), with the billable actions they
show beside them (bench/history.py).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import psutil

from bench.agent import Agent
from bench.common import SIDES, Context, Figure, in_turn
from bench.history import tally
from bench.process_stats import cpu_seconds

HISTORIES_SAMPLED = 10


async def measure(ctx: Context) -> list[Figure]:
    """`throughput_reps` rounds per side, each timed from the first start to the last result."""
    n = ctx.settings.pipelines
    rates: dict[str, list[float]] = {s: [] for s in SIDES}
    histories: dict[str, list[dict[str, Any]]] = {}
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
                if side not in histories:
                    histories[side] = [
                        tally((await h.fetch_history()).events) for h in handles[:HISTORIES_SAMPLED]
                    ]
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
    figure.extra["cpu_ms_per_pipeline"] = {
        side: {k: statistics.median(v) for k, v in by.items()} for side, by in cpu.items()
    }
    figure.extra["agent_errors"] = errors[:5]
    return [figure, history_figure(histories)]


def history_figure(histories: dict[str, list[dict[str, Any]]]) -> Figure:
    """P3h: events per clean pipeline, and the billable actions beside them."""
    actions = {s: statistics.median(t["actions"] for t in h) for s, h in histories.items()}
    figure = Figure(
        "P3h",
        "history events per clean pipeline (P3's runs)",
        "events",
        [float(t["total"]) for t in histories["worker"]],
        [float(t["total"]) for t in histories["bare"]],
        "ratio <= 1.15",
        judge=lambda w, r: r <= 1.15,
        notes=[
            f"billable actions per pipeline: worker {actions['worker']:g}, "
            f"bare {actions['bare']:g} (counted as bench/README.md says)"
        ],
    )
    figure.extra["billable_actions_per_pipeline"] = {
        s: {"median": actions[s], "by_kind": h[0]["actions_by_kind"]} for s, h in histories.items()
    }
    figure.extra["by_type"] = {s: h[0]["by_type"] for s, h in histories.items()}
    return figure
