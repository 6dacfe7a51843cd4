"""Recorded histories for the replay test: `RECORD_HISTORIES=1 pytest` refreshes them."""

from __future__ import annotations

import os
from pathlib import Path

from temporalio.client import WorkflowHandle

HISTORIES = Path(__file__).resolve().parent.parent / "histories"


async def save_history(handle: WorkflowHandle, name: str) -> None:
    """Keep this run's history when recording; a no-op in normal runs."""
    if os.environ.get("RECORD_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json())
