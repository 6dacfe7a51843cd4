"""What the worker left in a task directory: its files per stage, counted, and the stages a
pipeline goes through."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from activities import task_files
from harness.agents import new_tasks


def worker_tasks(queue_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every task file the worker wrote, queue and archive."""
    found = []
    for path in task_files.iter_task_files(queue_dir):
        task = task_files.load_task(path)
        if task.get("source_agent") == task_files.SOURCE_AGENT:
            found.append((path, task))
    return found


def only_task(queue_dir: Path) -> Path:
    """The one task file of the worker's in the queue; fails on none or several."""
    paths = [path for path, _ in new_tasks(queue_dir, set())]
    assert len(paths) == 1, paths
    return paths[0]


# A pipeline's agent task types, in the order it dispatches them, and the stage of each.
STAGE_OF_TYPE = {
    "build_prefab": "prefab",
    "build_plan": "implement",
    "security_audit": "audit",
    "security_fix": "fixes",
    "build_closeout": "close",
}


PIPELINE_TASK_TYPES = list(STAGE_OF_TYPE)


# What a summary lists as completed when every stage ran, fixes included.
ALL_PHASES_COMPLETED = ["prefab", "implement", "audit", "triage", "fixes", "close"]


def stage_of(task: dict[str, Any]) -> str:
    """The stage a task file was written for; BuildPlan phases are `phase-<n>`."""
    if task["task_type"] == "build_phase":
        return f"phase-{task['payload']['phase_number']}"
    return STAGE_OF_TYPE[task["task_type"]]


def dispatch_counts(queue_dir: Path) -> Counter[tuple[str, str]]:
    """How many task files each (workflow id, stage) got: 1 everywhere means no duplicate."""
    counts: Counter[tuple[str, str]] = Counter()
    for _, task in worker_tasks(queue_dir):
        counts[(str(task["payload"]["workflow_id"]), stage_of(task))] += 1
    return counts


def leftovers(*dirs: Path) -> list[Path]:
    """Temporary or partial files an interrupted write could leave behind."""
    found: list[Path] = []
    for d in dirs:
        if d.exists():
            found += [p for p in d.rglob("*") if p.name.endswith(".tmp")]
    return found
