"""Pipelines parked at the gate, for the figures about what a parked pipeline costs (P4, P7).

On the worker side an agent completes the first three stages, the audit with a block, so each
pipeline waits at the gate for an approval that never comes; the bare workflows (`BareGate`,
`BareTimerGate`) go to their gate at once. Nothing approves, so what is measured is the cost of
waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench.agent import Agent
from bench.common import Context

BLOCK_TRIAGE = {"blocks": ["bench block"], "flags": []}  # the audit's triage that parks a pipeline


@dataclass
class Parking:
    """One side's worker and gate agent."""

    ctx: Context
    side: str
    queue: str
    workdir: Path
    proc: subprocess.Popen[bytes]
    agent: Agent

    async def start(self, count: int, workflow: str) -> None:
        await self.ctx.start_pipelines(
            self.side, self.queue, self.workdir, self.agent, count, workflow
        )

    async def park(self, count: int, workflow: str, total: int) -> tuple[int, float]:
        """Start `count` more and wait until `total` are parked, or parking stalls: how many
        are parked, and the seconds that took."""
        started = time.monotonic()
        await self.start(count, workflow)
        reached = await wait_progress(
            partial(len, self.agent.gated), total, self.ctx.settings.stall_seconds
        )
        return reached, time.monotonic() - started


@contextlib.asynccontextmanager
async def parking(
    ctx: Context, side: str, poll: float = 30.0, slots: int | None = None
) -> AsyncIterator[Parking]:
    """A worker of `side` and an agent that completes the first three stages with a block in
    the audit, so that every pipeline started parks at the gate."""
    async with ctx.worker(side, poll, slots) as (queue, workdir, proc):
        agent = Agent(
            side, ctx.client, workdir / "task-queue", complete={1, 2, 3}, triage=BLOCK_TRIAGE
        )
        async with agent:
            yield Parking(ctx, side, queue, workdir, proc, agent)


async def wait_progress(count: Callable[[], int], total: int, stall: float) -> int:
    """Wait until count() reaches total, or has not moved for `stall` seconds; returns it.

    A side that stops parking is reported as stalled with how far it got, not as a timeout."""
    last, moved = count(), time.monotonic()
    while last < total:
        await asyncio.sleep(0.5)
        now = count()
        if now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved > stall:
            break
    return last
