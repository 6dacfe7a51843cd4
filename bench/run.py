"""`make bench`: the worker's overheads as ratios against bare Temporal, on one dev server.

    python -m bench.run [--quick] [--only P1,P3] [--json PATH]

Each figure is measured for the real worker (`worker.py` as a subprocess, agents completing with
`complete_activity.py` where the figure is about it) and for the bare baseline (`bench.bare`), in
the same run, on the same server, interleaved, several repetitions; the table shows medians with
min-max, the JSON every sample. bench/README.md says what each figure means; each one's code is
in bench/figures/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import temporalio

from bench.common import Context, Figure, Settings, open_context
from bench.figures import (
    p1_handoff,
    p2_cli,
    p3_throughput,
    p4_memory,
    p5_approval,
    p6_start,
    p7_parked_cost,
)
from harness.env import ROOT

FIGURES = ("P1", "P2", "P3", "P4", "P5", "P6", "P7")
# The order they run in: the quick ones first, the ones that start hundreds or park thousands last.
STEPS: tuple[tuple[str, Callable[[Context], Awaitable[Figure | list[Figure]]]], ...] = (
    ("P6", p6_start.measure),
    ("P2", p2_cli.measure),
    ("P1", p1_handoff.measure),
    ("P5", p5_approval.measure),
    ("P3", p3_throughput.measure),
    ("P7", p7_parked_cost.measure),
    ("P4", p4_memory.measure),
)
ORDER = {
    k: i for i, k in enumerate(("P1", "P2", "P2i", "P3", "P3h", "P4", "P5a", "P5b", "P6", "P7"))
}


async def run(
    settings: Settings, only: set[str], profile: set[str]
) -> tuple[dict[str, Any], list[Figure]]:
    """The chosen figures in STEPS' order, each printed as it is done: the JSON document,
    and the figures in the table's order."""
    figures: list[Figure] = []
    load: dict[str, Any] = {}
    async with open_context(settings, profile) as ctx:
        for key, measure in STEPS:
            if key not in only:
                continue
            print(f"bench: {key} ...", flush=True)
            ctx.current = key
            load_before = os.getloadavg()[0]
            started = time.monotonic()
            result = await measure(ctx)
            figures.extend(result if isinstance(result, list) else [result])
            load[key] = {
                "loadavg_1m_before": load_before,
                "loadavg_1m_after": os.getloadavg()[0],
                "seconds": time.monotonic() - started,
            }
            print_figures([f for f in figures if f.key.startswith(key)])
    figures.sort(key=lambda f: ORDER.get(f.key, 99))
    document = {
        "meta": meta(settings),
        "load": load,
        "figures": {f.key: f.as_json() for f in figures},
    }
    return document, figures


def meta(settings: Settings) -> dict[str, Any]:
    """What the numbers were measured on, so that runs on different machines are not compared."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "temporalio": temporalio.__version__,
        "quick": settings.quick,
        "settings": {k: v for k, v in vars(settings).items()},
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def fmt(stats: dict[str, Any], unit: str) -> str:
    """`median (min-max)`, seconds below 10 shown as milliseconds."""
    if not stats.get("n"):
        return "-"
    scale, suffix = (1000.0, "ms") if unit == "s" and stats["max"] < 10 else (1.0, unit)
    m, lo, hi = (stats[k] * scale for k in ("median", "min", "max"))
    return f"{m:.3g} {suffix} ({lo:.3g}-{hi:.3g})"


def print_figures(figures: list[Figure]) -> None:
    for fig in figures:
        data = fig.as_json()
        ratio = f"{data['ratio']:.2f}x" if data["ratio"] is not None else "-"
        met = {True: "met", False: "NOT MET", None: ""}[data["target_met"]]
        worker, bare = fmt(data["worker"], fig.unit), fmt(data["bare"], fig.unit)
        print(
            f"  {fig.key:4} {fig.name}\n       worker {worker:32} bare {bare:32}"
            f" ratio {ratio:7} target: {fig.target} {met}",
            flush=True,
        )
        for note in fig.notes:
            print(f"       note: {note}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="small counts: checks the harness in under a minute"
    )
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(FIGURES)}")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results.json"))
    parser.add_argument("--pipelines", type=int, help="P3: pipelines at once (200)")
    parser.add_argument("--parked", type=int, help="P4 and P7: pipelines parked (2000)")
    parser.add_argument(
        "--profile",
        metavar="FIGURES",
        help="record the worker process with py-spy during these figures "
        "(collapsed stacks in bench/profile-<figure>.txt)",
    )
    args = parser.parse_args()
    settings = Settings.make(args.quick)
    if args.pipelines:
        settings.pipelines = args.pipelines
    if args.parked:
        settings.parked = settings.parked_cost = args.parked
    only = set(args.only.split(",")) if args.only else set(FIGURES)
    profile = set(args.profile.split(",")) if args.profile else set()
    result, figures = asyncio.run(run(settings, only, profile))
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nbench: {len(result['figures'])} figures, written to {args.json}")
    print_figures(figures)
    os._exit(0)  # the Temporal runtime can crash in interpreter teardown (docs/DESIGN.md)


if __name__ == "__main__":
    main()
