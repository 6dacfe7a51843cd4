"""temporal-build-worker: hosts BuildPipelineWorkflow and BuildPlanWorkflow on one task queue.

It also polls its host's queue (`<TASK_QUEUE>@<WORKER_HOST>`) for activities only: the stages
that AGENT_HOSTS sends to an agent on this host.

Start-up order: config -> logging -> observability -> TLS -> client -> Worker. `--dev-server`
(what `make run` uses) first starts an embedded Temporal dev server when nothing answers at
TEMPORAL_ADDRESS, and stops it again on exit. `--check-open-runs` starts no worker: it replays
every open run on this checkout's workflow code and exits (deploy_check.py, docs/OPERATIONS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from temporalio.client import Client
from temporalio.worker import Worker

import deploy_check
import observability
from activities.agent_stages import AgentStageActivities
from activities.build_phase import BuildPhaseActivities
from activities.build_pipeline_activities import PipelineActivities
from activities.gate_watcher import GateWatcher
from activities.hold import HoldActivities, WaitActivities
from config import WorkerConfig, load_config
from dev_server import embedded_dev_server
from exceptions import ConfigError, CredentialError, TemporalUnreachableError
from models import Features, host_queue
from program_exit import EXIT_OK, exit_code, leave
from temporal_connect import connect, worker_identity
from workflows.build_pipeline_workflow import BuildPipelineWorkflow
from workflows.build_plan import BuildPlanWorkflow
from workflows.stage_runner import BUILD_STAGE

ROOT = Path(__file__).resolve().parent
WORKER_ID = str(uuid.uuid4())
GRACEFUL_SHUTDOWN = timedelta(seconds=10)  # PM2's kill_timeout must exceed this
# Workflows kept in memory between tasks. A cached pipeline costs ~170 KiB of RSS (bench P4);
# a parked one needs no cache (its gate waits on an update and a retry timer), so the SDK's 1000
# made a parked pipeline cost ~100 KiB at 2,000 parked. At 250 it was 37 KiB, but 2,000
# pipelines started at once then replay often (bench P4); 500 is the compromise.
MAX_CACHED_WORKFLOWS = 500

log = structlog.get_logger("worker")


def workflows() -> list[type]:
    return [BuildPlanWorkflow, BuildPipelineWorkflow]


def activities(config: WorkerConfig, gate_watcher: GateWatcher | None = None) -> list[Any]:
    phase = BuildPhaseActivities(config)
    agents = AgentStageActivities(config)
    pipeline = PipelineActivities(config, gate_watcher)
    waits = WaitActivities(config)
    return [
        phase.execute_build_phase,
        pipeline.pipeline_settings,
        agents.prefab_scaffolding,
        agents.implement_build,
        agents.request_security_audit,
        pipeline.process_triage_output,
        agents.apply_flag_fixes,
        pipeline.notify_blocks,
        pipeline.wait_for_block_resolution,
        agents.close_build,
        pipeline.summarize_workflow,
        pipeline.end_pipeline,
        pipeline.close_pipeline_tasks,
        pipeline.supersede_stage_tasks,
        HoldActivities(config).notify_hold,
        waits.notify_reminder,
        waits.notify_budget,
    ]


async def check_search_attribute(client: Client, namespace: str) -> bool:
    """Is `BuildStage` registered? If not, try to register it; say so once if that fails."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )

    try:
        known = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        if BUILD_STAGE.name in known.custom_attributes:
            return True
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes={BUILD_STAGE.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD},
            )
        )
        log.info("search_attribute_registered", name=BUILD_STAGE.name)
        return True
    except Exception as err:  # noqa: BLE001 - any failure means: run without it
        log.warning(
            "search_attribute_unavailable",
            name=BUILD_STAGE.name,
            error=str(err).splitlines()[0] if str(err) else type(err).__name__,
            effect="pipelines run without the BuildStage search attribute",
        )
        return False


def build_worker(client: Client, config: WorkerConfig, **options: Any) -> Worker:
    """The worker as production runs it; tests build theirs here too (`gate_watcher`: the
    running watcher, which lets the gate's fallback check slow down for the files it covers)."""
    return Worker(
        client,
        task_queue=config.task_queue,
        workflows=workflows(),
        activities=activities(config, options.pop("gate_watcher", None)),
        identity=options.pop("identity", worker_identity()),
        graceful_shutdown_timeout=options.pop("graceful_shutdown_timeout", GRACEFUL_SHUTDOWN),
        max_cached_workflows=options.pop("max_cached_workflows", MAX_CACHED_WORKFLOWS),
        **options,
    )


def build_host_worker(client: Client, config: WorkerConfig, **options: Any) -> Worker:
    """The second poller: activities only, on this host's queue (`<TASK_QUEUE>@<WORKER_HOST>`).

    Stages of agents that AGENT_HOSTS maps to this host are scheduled there, so their files are
    written and read in this worker's directories. It shares the client and the activities'
    configuration with the main worker; workflows never run here.
    """
    return Worker(
        client,
        task_queue=host_queue(config.task_queue, config.worker_host),
        activities=activities(config, options.pop("gate_watcher", None)),
        identity=options.pop("identity", worker_identity()),
        graceful_shutdown_timeout=options.pop("graceful_shutdown_timeout", GRACEFUL_SHUTDOWN),
        **options,
    )


async def run(config: WorkerConfig, stop: asyncio.Event) -> None:
    log.info(
        "worker_starting",
        address=config.temporal_address,
        namespace=config.temporal_namespace,
        task_queue=config.task_queue,
        tls=config.vault_configured,
    )
    try:
        client = await connect(config, **observability.client_options())
    except CredentialError as err:
        log.error("tls_credential_error", error=str(err))
        raise
    except TemporalUnreachableError as err:
        log.error("temporal_unreachable", error=str(err))
        raise
    Features.stage_search_attribute = await check_search_attribute(
        client, config.temporal_namespace
    )
    watcher = GateWatcher(client, config.agent_task_dir)
    worker = build_worker(client, config, gate_watcher=watcher, **observability.worker_options())
    host_worker = build_host_worker(
        client, config, gate_watcher=watcher, **observability.worker_options()
    )
    try:
        async with worker, host_worker, watcher.running():
            log.info(
                "worker_started",
                task_queue=config.task_queue,
                host_queue=host_queue(config.task_queue, config.worker_host),
                address=config.temporal_address,
                identity=worker_identity(),
            )
            await stop.wait()
            log.info("worker_stopping", graceful_timeout_s=GRACEFUL_SHUTDOWN.total_seconds())
            # Both drain at once, so a stop still ends within one GRACEFUL_SHUTDOWN (PM2's
            # kill_timeout); leaving the `async with` then finds them already shut down.
            await asyncio.gather(worker.shutdown(), host_worker.shutdown())
    finally:
        await asyncio.to_thread(observability.shutdown)  # flushing blocks; the loop must not
    log.info("worker_stopped")


async def main_async(config: WorkerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(config, stop)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check-open-runs",
        action="store_true",
        help="start no worker: replay every open pipeline and plan on this checkout's workflow "
        "code, print each run that would break, exit 0 if none would, else 1",
    )
    mode.add_argument(
        "--dev-server",
        action="store_true",
        help="start an embedded dev server when nothing answers at TEMPORAL_ADDRESS",
    )
    parser.add_argument(
        "--dev-server-dir",
        type=Path,
        default=ROOT / ".temporal",
        help="where the embedded dev server keeps its SQLite file and log (default: .temporal)",
    )
    args = parser.parse_args(argv)
    checked = EXIT_OK

    def start() -> None:
        nonlocal checked
        config = load_config()
        if args.check_open_runs:
            checked = deploy_check.main(config, workflows())
            return
        observability.configure_logging(
            config.log_level, config.log_file, config.log_format, worker_id=WORKER_ID
        )
        log.info("config_loaded", **config.public_fields())
        if observability.init_observability():
            log.info("otel_enabled", **observability.public_fields())
        dev_server = embedded_dev_server(config, args.dev_server_dir)
        with dev_server if args.dev_server else contextlib.nullcontext():
            asyncio.run(main_async(config))

    return (
        exit_code("temporal-build-worker", start, (ConfigError, CredentialError), name_error=True)
        or checked
    )


if __name__ == "__main__":
    leave(main())
