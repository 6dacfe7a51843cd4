"""P7, parked cost: the CPU that pipelines parked at the gate cost the dev server and the worker
at rest.

A parked pipeline should cost nothing between the gate's checks; this measures what the checks
(BLOCK_POLL_SECONDS, at its default) and the watcher add over the same count parked on a timer
alone (`BareTimerGate`), the least Temporal can do for a pipeline waiting seven days.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from bench.common import SIDES, Context, Figure
from bench.figures.parking import parking
from bench.process_stats import cpu_windows


async def measure(ctx: Context) -> Figure:
    """Server plus worker CPU at rest with `parked_cost` parked at the gate, against the
    same count parked on a timer alone (`BareTimerGate`); the bare side parks first, so the
    worker side is measured with the twin's workflows still on the server."""
    s = ctx.settings
    total, poll = s.parked_cost, s.poll_seconds
    percent: dict[str, list[float]] = {side: [] for side in SIDES}
    detail: dict[str, Any] = {}
    for side in ("bare", "worker"):
        async with parking(ctx, side, poll) as gate:
            reached, took = await gate.park(total, "BareTimerGate", total)
            await asyncio.sleep(s.rest_settle)
            windows = await cpu_windows(
                {"server": ctx.server_pid, "worker": gate.proc.pid},
                s.rest_window,
                s.rest_windows,
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
        f"parked cost: server + worker CPU at rest, {total} parked (BLOCK_POLL_SECONDS={poll:g})",
        "% of a core",
        percent["worker"],
        percent["bare"],
        "ratio <= 2 and worker <= 10%",
        judge=lambda w, r: r <= 2 and w["median"] <= 10,
        notes=[
            "bare: the same count parked on a 7-day wait_condition timer alone",
            f"{s.rest_windows} windows of {s.rest_window:g} s, "
            f"{s.rest_settle:g} s after the last one parked",
        ],
    )
    figure.extra["detail"] = detail
    if reached < total:
        figure.notes.append(f"worker side STALLED at {reached} parked")
    return figure
