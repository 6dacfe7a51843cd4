"""`make demo`: one BuildPipelineWorkflow with a flag and a block, end to end, in under a minute.

A dev server, the production worker and scripted agents (which run complete_activity.py, as
real agents do) play a whole pipeline; an operator approves the block with the `approve`
update. Each stage is printed as it happens, then the summary file.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

import observability
from harness.agents import ScriptedAgent
from harness.env import DEV_SERVER_ARGS, TEMPORAL_BIN, make_config
from harness.env import running_worker as run_worker
from harness.pipelines import (
    PipelineScript,
    install_matrix_recorder,
    matrix_messages,
    originating_task,
    pipeline_input,
    status_of,
)
from models import BuildPipelineResult, DecisionInput
from workflows.build_pipeline_workflow import BUILD_STAGE


async def main() -> None:
    observability.configure_logging("WARNING")
    began = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - began:5.1f}s] {text}", flush=True)

    say("starting a Temporal dev server")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=TEMPORAL_BIN, data_converter=pydantic_data_converter,
        search_attributes=[BUILD_STAGE], dev_server_extra_args=DEV_SERVER_ARGS)
    with tempfile.TemporaryDirectory(prefix="build-demo-") as tmp:
        config = make_config(Path(tmp), env.client.service_client.config.target_host)
        task_id, _ = originating_task(config)
        notifications = install_matrix_recorder(config)  # stands in for send-matrix.sh
        script = PipelineScript(flags=["API key committed in config.yaml"],
                                blocks=["container runs privileged with host networking"],
                                info=["base image is two minor versions behind"])
        say(f"task queue: {config.agent_task_dir}")
        async with run_worker(env.client, config), ScriptedAgent(
                config.agent_task_dir, config.temporal_address, script.decide):
            handle = await env.client.start_workflow(
                "BuildPipelineWorkflow", pipeline_input(task_id, build_name="demo-build"),
                id=f"demo-{uuid.uuid4().hex[:8]}", task_queue=config.task_queue,
                result_type=BuildPipelineResult)
            say(f"started BuildPipelineWorkflow {handle.id}")
            seen = ""
            result_task = asyncio.ensure_future(handle.result())
            while not result_task.done():
                status = await status_of(handle)
                if status.stage != seen:
                    seen = status.stage
                    extra = ""
                    if seen == "fixes":
                        extra = f" ({len(status.flags)} flag(s) sent to the agent)"
                    say(f"stage: {seen}{extra}")
                    if seen == "awaiting-approval":
                        say(f"  blocked on: {status.blocks}")
                        say("  operator: temporal workflow update execute --workflow-id "
                            f"{handle.id} --name approve")
                        await handle.execute_update("approve", DecisionInput(
                            note="privileged mode accepted for this build", by="demo-operator"))
                await asyncio.sleep(0.1)
            result = await result_task
            say(f"stage: {(await status_of(handle)).stage}")
        for sent in matrix_messages(notifications):
            say(f"Matrix message to #{sent['room']}: " + sent["message"].replace("\n", " | "))
        say(f"result: {result.status}; summary at {result.summary_path}")
        print(Path(result.summary_path).read_text(), flush=True)
    await env.shutdown()
    say("done")


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # interpreter teardown can crash once the Temporal runtime has run (docs/DESIGN.md)
