"""What a process costs, read from outside it: memory, CPU time and import time.

Both sides are read the same way (psutil on the process id, or the interpreter's own
`-X importtime` report), so a ratio compares the processes and not the measuring.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import psutil


async def rss(pid: int, samples: int = 5) -> float:
    """Median RSS (bytes) of `pid` over `samples` readings 0.4 s apart."""
    proc = psutil.Process(pid)
    values = []
    for _ in range(samples):
        values.append(proc.memory_info().rss)
        await asyncio.sleep(0.4)
    return float(statistics.median(values))


async def cpu_percent(pid: int, seconds: float) -> float:
    """CPU of `pid` over the next `seconds`, in % of one core."""
    proc = psutil.Process(pid)
    proc.cpu_percent(None)
    await asyncio.sleep(seconds)
    return float(proc.cpu_percent(None))


def cpu_seconds(proc: psutil.Process) -> float:
    """User plus system CPU time the process has used so far."""
    times = proc.cpu_times()
    return float(times.user + times.system)


async def cpu_windows(pids: dict[str, int], seconds: float, count: int) -> list[dict[str, float]]:
    """CPU of each process over `count` consecutive windows, in % of one core."""
    procs = {name: psutil.Process(pid) for name, pid in pids.items()}
    windows = []
    for _ in range(count):
        before = {name: cpu_seconds(p) for name, p in procs.items()}
        started = time.monotonic()
        await asyncio.sleep(seconds)
        took = time.monotonic() - started
        windows.append(
            {name: (cpu_seconds(p) - before[name]) / took * 100 for name, p in procs.items()}
        )
    return windows


def import_time(stderr: str) -> float:
    """Seconds of all top-level imports in a `python -X importtime` run's stderr."""
    total = 0
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|", 2)
        if not name.startswith("  "):  # " name": a top-level import; deeper ones are indented
            total += int(cumulative)
    return total / 1e6
