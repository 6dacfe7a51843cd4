"""Parked pipelines hold no activity slot: the block gate polls through retries, not a loop.

With a heartbeating poll loop each parked pipeline held one of the worker's activity slots, so
once as many pipelines were parked as the worker has slots (100 by default) no activity of any
pipeline could run (bench P4 stalled at 112 of 2,000). Here the worker has 2 slots and 3
pipelines park; each must still reach the gate, poll its file, and finish when approved.
"""

from __future__ import annotations

import asyncio

from temporalio.client import Client

from config import WorkerConfig
from harness.agents import worker_and_agent
from harness.env import running_worker
from harness.pipelines import (
    PipelineScript,
    approve_by_file,
    originating_task,
    start_pipeline,
    wait_stage,
)
from tests.helpers.checks import wait_for

PARKED = 3
SLOTS = 2


async def test_more_parked_pipelines_than_activity_slots(
    client: Client, config: WorkerConfig
) -> None:
    script = PipelineScript(blocks=["needs a human"])
    origins = [originating_task(config) for _ in range(PARKED)]
    worker = running_worker(client, config, max_concurrent_activities=SLOTS)
    async with worker_and_agent(client, config, script.decide, worker):
        handles = [
            await start_pipeline(client, config, task_id, build_name=f"slots-{i}")
            for i, (task_id, _) in enumerate(origins)
        ]
        for handle in handles:  # each must reach the gate with fewer slots than pipelines
            await wait_stage(handle, "awaiting-approval", 60)
        await wait_for(lambda: all("input-required" in p.read_text() for _, p in origins))
        for _, path in origins:  # approved by file: each gate's poll must still run
            approve_by_file(path)
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 60)
    assert [r.status for r in results] == ["complete"] * PARKED
