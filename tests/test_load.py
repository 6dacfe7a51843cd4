"""Load: 300 pipelines started at once against one worker.py process.

The agents here answer through the Temporal client in this process, by the token in each task
file, exactly the call complete_activity.py makes (`get_async_activity_handle(task_token=...)
.complete(...)`): 1,500 CLI processes would measure Python start-up on two cores rather than
the worker. The CLI itself is exercised by every other test of the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from temporalio.client import Client, WorkflowHandle

from harness.agents import client_agent
from harness.env import make_config
from harness.pipelines import PipelineScript, pipeline_input, summary_of
from harness.worker_process import WorkerProcess, worker_env
from models import BuildPipelineResult
from tests.helpers.figures import Figures
from tests.helpers.queue import dispatch_counts, leftovers
from tests.helpers.secrets import harvest_tokens, scan_for_secrets

PIPELINES = 300
STAGES = 5  # prefab, implement, audit, fixes, close: every pipeline has a flag
PARALLEL_ANSWERS = 32


async def sample_rss(worker: WorkerProcess, samples: list[int]) -> None:
    while True:
        with contextlib.suppress(psutil.Error):
            samples.append(worker.rss())
        await asyncio.sleep(0.25)


@pytest.mark.slow
async def test_300_pipelines_at_once(
    client: Client, address: str, tmp_path: Path, figures: Figures
) -> None:
    config = make_config(tmp_path, address)
    env = worker_env(config, LOG_LEVEL="INFO", LOG_FILE=str(tmp_path / "logs" / "worker.log"))
    worker = WorkerProcess(env, tmp_path / "logs")
    script = PipelineScript(flags=["pin every base image"])
    rss: list[int] = []
    try:
        await worker.start()
        await asyncio.sleep(1)
        idle_rss = worker.rss()
        async with client_agent(
            client, config.agent_task_dir, script.decide, PARALLEL_ANSWERS
        ) as agent:
            sampler = asyncio.create_task(sample_rss(worker, rss))
            try:
                started = time.monotonic()
                handles: list[WorkflowHandle[Any, BuildPipelineResult]] = await asyncio.gather(
                    *(
                        client.start_workflow(
                            "BuildPipelineWorkflow",
                            pipeline_input(f"load-{i}", build_name=f"load-{i}"),
                            id=f"load-{i}-{uuid.uuid4().hex[:8]}",
                            task_queue=config.task_queue,
                            result_type=BuildPipelineResult,
                        )
                        for i in range(PIPELINES)
                    )
                )
                all_started = time.monotonic() - started
                done_at: list[float] = []

                async def finish(
                    handle: WorkflowHandle[Any, BuildPipelineResult],
                ) -> BuildPipelineResult:
                    result = await handle.result()
                    done_at.append(time.monotonic() - started)
                    return result

                results = await asyncio.wait_for(asyncio.gather(*(finish(h) for h in handles)), 300)
                wall = time.monotonic() - started
                cpu = psutil.Process(worker.pid).cpu_times()
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
    finally:
        await worker.stop()

    # nothing lost
    assert agent.errors == []
    assert [r.status for r in results] == ["complete"] * PIPELINES
    summaries = [summary_of(r.summary_path) for r in results]
    assert {s["outcome"] for s in summaries} == {"success"}
    assert {s["workflow_id"] for s in summaries} == {h.id for h in handles}
    assert len(list(config.summary_dir.rglob("*.yml"))) == PIPELINES
    # nothing dispatched twice
    counts = dispatch_counts(config.agent_task_dir)
    assert len(counts) == PIPELINES * STAGES and set(counts.values()) == {1}
    assert agent.answered == PIPELINES * STAGES
    assert leftovers(config.agent_task_dir, config.summary_dir) == []
    scan = scan_for_secrets(worker.outputs(), harvest_tokens(config.agent_task_dir))
    assert scan.hits == [], scan.hits[:5]

    mib = 1024 * 1024
    figures.record(
        "load", "pipelines started at once / completed / lost", f"{PIPELINES} / {len(results)} / 0"
    )
    figures.record(
        "load",
        "task files / answered / dispatched twice",
        f"{sum(counts.values())} / {agent.answered} / 0",
    )
    figures.record("load", "all started (s) / all done (s)", f"{all_started:.1f} / {wall:.1f}")
    figures.record(
        "load",
        "pipeline done at p50 / p95 (s)",
        f"{statistics.median(done_at):.1f} / {statistics.quantiles(done_at, n=20)[-1]:.1f}",
    )
    figures.record(
        "load",
        "throughput (pipelines/s, task files/s)",
        f"{PIPELINES / wall:.1f}, {PIPELINES * STAGES / wall:.1f}",
    )
    figures.record(
        "load",
        "worker RSS idle / peak (MiB)",
        f"{idle_rss / mib:.0f} / {max(rss, default=0) / mib:.0f}",
    )
    figures.record("load", "worker CPU user+system (s)", cpu.user + cpu.system)
    figures.record(
        "load", "log scan (INFO): texts / token forms / hits", f"{scan.texts} / {scan.needles} / 0"
    )
