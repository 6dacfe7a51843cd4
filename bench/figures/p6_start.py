"""P6, worker start: from starting the process to both of its pollers on the task queue.

A worker that PM2 restarts is away for this long: what it costs before polling (imports,
configuration, connecting, registering) on top of a minimal worker process.
"""

from __future__ import annotations

import asyncio
import time

from bench.common import SIDES, Context, Figure, in_turn
from bench.server import start_worker, stop_process, wait_polling


async def measure(ctx: Context) -> Figure:
    """`starts` process starts per side, each timed until DescribeTaskQueue shows its pollers."""
    samples: dict[str, list[float]] = {s: [] for s in SIDES}
    for rep in range(ctx.settings.starts):
        for side in in_turn(rep):
            queue = ctx.fresh(f"start-{side}")
            started = time.monotonic()
            proc = start_worker(side, ctx.address, queue, ctx.workdir / queue, 30.0)
            try:
                polled = await wait_polling(ctx.client, queue, proc, interval=0.005)
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
