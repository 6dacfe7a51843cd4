"""P1, stage handoff: from an agent's completion returning to the next stage's task file on disk.

This is the latency a pipeline adds at every stage boundary, prefab -> implement and
implement -> audit: the worker's side completes with `complete_activity.py` as an agent does
and then writes the next task file; the bare side completes through the client and writes a
token file. Both completions carry the same usage object, as an agent that reports what its
work cost sends it (`--usage`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

from bench.agent import RESULT, Agent
from bench.common import SIDES, Context, Figure, in_turn
from bench.server import PYTHON
from harness.env import ROOT, cli_env

USAGE = {"cost_usd": 0.42, "input_tokens": 1200, "output_tokens": 800}


async def complete_by_cli(token: bytes, env: dict[str, str]) -> None:
    """What an agent runs when its stage is done: `complete_activity.py <token> success msg
    --usage <json>`."""
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        str(ROOT / "complete_activity.py"),
        base64.b64encode(token).decode(),
        "success",
        "bench",
        "--usage",
        json.dumps(USAGE),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
    )
    if await proc.wait() != 0:
        raise RuntimeError("P1: complete_activity.py failed")


async def measure(ctx: Context) -> Figure:
    """`handoff_pipelines` pipelines per side after one warm-up each, two handoffs each."""
    samples: dict[str, list[float]] = {s: [] for s in SIDES}
    env = cli_env(ctx.address)
    async with (
        ctx.worker("worker") as (wq, wdir, _),
        ctx.worker("bare") as (bq, bdir, _),
        Agent("worker", ctx.client, wdir / "task-queue", complete=set()) as wag,
        Agent("bare", ctx.client, bdir / "task-queue", complete=set()) as bag,
    ):
        for rep in range(ctx.settings.handoff_pipelines + 1):  # the first one warms up
            for side in in_turn(rep):
                agent = wag if side == "worker" else bag
                queue, workdir = (wq, wdir) if side == "worker" else (bq, bdir)
                (handle,) = await ctx.start_pipelines(side, queue, workdir, agent, 1)
                wf = handle.id
                await agent.arrival(wf, 1)
                for stage, nxt in ((1, 2), (2, 3)):
                    token = agent.tokens[(wf, stage)]
                    if side == "worker":
                        await complete_by_cli(token, env)
                    else:
                        await ctx.client.get_async_activity_handle(task_token=token).complete(
                            {**RESULT, "usage": USAGE}
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
            "worker side: complete_activity.py --usage process exit; bare side: "
            "AsyncActivityHandle.complete() returning; both completions carry a usage object"
        ],
    )
