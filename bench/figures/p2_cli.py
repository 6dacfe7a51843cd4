"""P2 and P2i, the completion CLI: what one `complete_activity.py <token> success msg` costs.

Agents complete every stage with this process, so its wall time is on each handoff. The bare
side is `baseline_complete.py`: import temporalio, connect, complete. P2i splits off the import
time, the part a run of the CLI pays before it talks to the server.
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
import time

from bench.agent import Agent
from bench.common import SIDES, Context, Figure, in_turn
from bench.process_stats import import_time
from bench.server import PYTHON
from harness.env import ROOT, cli_env


def command(side: str, token: str) -> list[str]:
    """The completing script of `side` and its arguments."""
    if side == "worker":
        return [str(ROOT / "complete_activity.py"), token, "success", "bench"]
    return [str(ROOT / "bench" / "baseline_complete.py"), token, "bench"]


async def run_cli(side: str, token: str, env: dict[str, str], *flags: str) -> tuple[float, str]:
    """Complete one activity by `token` with `side`'s script: wall seconds, and its stderr."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        *flags,
        *command(side, token),
        cwd=tempfile.gettempdir(),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    took = time.monotonic() - started
    if proc.returncode != 0:
        said = [ln for ln in err.decode().splitlines() if not ln.startswith("import time:")]
        raise RuntimeError(f"P2 {side} exited {proc.returncode}: " + "\n".join(said[-20:]))
    return took, err.decode()


async def measure(ctx: Context) -> list[Figure]:
    """`cli_runs` completions per side, then one run of each under `-X importtime`.

    The tokens are `BareTokens` activities on a bare worker, so the workflow around them costs
    both sides the same; only the completing process differs."""
    runs = ctx.settings.cli_runs
    async with ctx.worker("bare") as (queue, workdir, _):
        async with Agent("bare", ctx.client, workdir / "task-queue", complete=set()) as ag:
            wf = ctx.fresh("tokens")
            count = 2 * runs + 2
            await ctx.client.start_workflow("BareTokens", count, id=wf, task_queue=queue)
            await ag.wait(lambda: len(ag.tokens) >= count, 60, "tokens")
            tokens = [base64.b64encode(t).decode() for t in ag.tokens.values()]
            env = cli_env(ctx.address)
            samples: dict[str, list[float]] = {s: [] for s in SIDES}
            for rep in range(runs):
                for side in in_turn(rep):
                    samples[side].append((await run_cli(side, tokens.pop(), env))[0])
            imports = {
                side: import_time((await run_cli(side, tokens.pop(), env, "-X", "importtime"))[1])
                for side in SIDES
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
