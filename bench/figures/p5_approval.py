"""P5a and P5b, approval: from the operator's approval to the close-out task file on disk.

An operator approves a blocked pipeline either by the `approve` update (P5a) or by setting the
originating task file to `approved` (P5b); either way the pipeline should move on at once, the
file through the task-directory watcher well before BLOCK_POLL_SECONDS (at its default). The
bare side is an update to `BareGate`, and a watchfiles watcher sending it when a file appears.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path

from activities import task_files
from bench.agent import Agent
from bench.common import SIDES, Context, Figure, in_turn
from bench.figures.parking import BLOCK_TRIAGE


async def measure(ctx: Context) -> list[Figure]:
    """`2 * approvals` parked per side: the first half approved by update, the rest by file."""
    poll = ctx.settings.poll_seconds
    n = ctx.settings.approvals
    by_update: dict[str, list[float]] = {s: [] for s in SIDES}
    by_file: dict[str, list[float]] = {s: [] for s in SIDES}
    async with (
        ctx.worker("worker", poll) as (wq, wdir, _),
        ctx.worker("bare", poll) as (bq, bdir, _),
        Agent(
            "worker",
            ctx.client,
            wdir / "task-queue",
            complete={1, 2, 3, 8},
            triage=BLOCK_TRIAGE,
        ) as wag,
        Agent("bare", ctx.client, bdir / "task-queue", complete={8}) as bag,
    ):
        handles = {
            "worker": await ctx.start_pipelines("worker", wq, wdir, wag, 2 * n),
            "bare": await ctx.start_pipelines("bare", bq, bdir, bag, 2 * n, "BareGate"),
        }
        agents = {"worker": wag, "bare": bag}
        for side in SIDES:
            await agents[side].wait(
                partial(gated_at_least, agents[side], 2 * n), 120, f"P5 {side} parked"
            )
        await asyncio.sleep(1.0)  # let each gate's poller start
        for i in range(n):
            for side in in_turn(i):
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


def gated_at_least(agent: Agent, count: int) -> bool:
    return len(agent.gated) >= count


def approve_file(path: Path) -> None:
    """An operator's approval, written atomically (an editor's save is a rename, too)."""
    task = task_files.load_task(path)
    task["status"] = task_files.APPROVED
    task.setdefault("history", []).append(
        task_files.history_entry(task_files.APPROVED, "approved by the benchmark", actor="bench")
    )
    task_files.write_text_atomic(path, task_files.dump_yaml(task), 0o644)
