"""P4, memory: how much the worker's RSS grows for each pipeline parked at the block gate.

Pipelines can wait at the gate for days, so a host holds as many as are waiting: this says
how many a worker process can hold. The bare side parks `BareGate` (wait_condition raced with a
running heartbeating activity), which needs an activity slot per parked pipeline.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.common import SIDES, Context, Figure
from bench.figures.parking import parking
from bench.process_stats import cpu_percent, rss


async def measure(ctx: Context) -> Figure:
    """Once per side, bare first: RSS after `parked_warmup` parked and after all `parked`."""
    total = ctx.settings.parked
    per: dict[str, list[float]] = {s: [] for s in SIDES}
    detail: dict[str, Any] = {}
    for side in ("bare", "worker"):
        detail[side] = await park(ctx, side)
        parked = detail[side]["parked"] - ctx.settings.parked_warmup
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
            f"{ctx.settings.settle_seconds:g} s with all parked",
        ],
    )
    figure.extra["detail"] = detail
    if detail["worker"]["stalled"]:
        figure.notes.append(f"worker side STALLED at {detail['worker']['parked']} parked")
    return figure


async def park(ctx: Context, side: str) -> dict[str, Any]:
    """Park `parked` pipelines at the gate; RSS after the warm-up ones and after all.

    The warm-up ones take the imports, caches and connections every worker has, so the growth
    after them is what each further parked pipeline costs."""
    s = ctx.settings
    total, warm, settle = s.parked, s.parked_warmup, s.settle_seconds
    slots = total + 200 if side == "bare" else None
    async with parking(ctx, side, slots=slots) as gate:
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
