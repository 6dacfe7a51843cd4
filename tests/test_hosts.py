"""Agents on several hosts: two worker.py processes, each with its own WORKER_HOST, HOME and
directories and one shared AGENT_HOSTS, against the session dev server; each host's scripted
agent sees only its own task directory, as agents on two machines would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError, TimeoutType

from activities import task_files
from config import WorkerConfig
from harness.agents import Decide, ScriptedAgent, new_tasks, succeed_all
from harness.env import build_plan_input, make_config, start_plan
from harness.pipelines import (
    PipelineScript,
    approve_by_file,
    held_messages,
    install_matrix_recorder,
    originating_task,
    start_pipeline,
    status_of,
    summary_of,
    update,
    wait_stage,
)
from harness.worker_process import WorkerProcess, worker_env
from models import BuildPlanResult, PipelineSettings, host_queue
from tests.helpers.checks import failure_of, wait_for
from tests.helpers.cli import temporal_cli
from tests.helpers.histories import activities_run, save_history
from tests.helpers.queue import ALL_PHASES_COMPLETED
from workflows.hosts import HOST_UNAVAILABLE, Route, on_host, route, unplaced

AGENT_HOSTS = "dispatcher=alpha,claudebox=alpha,security-agent=alpha,dev=beta"


def host_config(tmp: Path, address: str, task_queue: str, host: str) -> WorkerConfig:
    """One host's worker: its own directories under `tmp/<host>`, the fleet's task queue."""
    return make_config(tmp / host, address, task_queue=task_queue)


def host_env(config: WorkerConfig, host: str, **extra: str) -> dict[str, str]:
    home = config.agent_task_dir.parent / "home"
    home.mkdir(parents=True, exist_ok=True)
    return worker_env(config, HOME=str(home), WORKER_HOST=host, AGENT_HOSTS=AGENT_HOSTS, **extra)


@dataclass
class Host:
    """One machine of the fleet: its worker's settings, its worker.py and its agent."""

    config: WorkerConfig
    worker: WorkerProcess
    agent: ScriptedAgent


@contextlib.asynccontextmanager
async def two_hosts(address: str, tmp_path: Path, decide: Decide) -> AsyncIterator[list[Host]]:
    """Hosts alpha and beta on one fresh task queue, each with its worker and an agent that
    answers only its own task directory, as `decide` says; for the block."""
    queue = f"test-{uuid.uuid4().hex[:12]}"
    async with contextlib.AsyncExitStack() as stack:
        hosts = []
        for name in ("alpha", "beta"):
            config = host_config(tmp_path, address, queue, name)
            worker = WorkerProcess(host_env(config, name), tmp_path / "logs", name=name)
            agent = ScriptedAgent(config.agent_task_dir, address, decide)
            hosts.append(Host(config, worker, agent))
        for host in hosts:
            await stack.enter_async_context(host.worker)
        for host in hosts:
            await stack.enter_async_context(host.agent)
        yield hosts


async def pollers(address: str, queue: str) -> list[dict[str, Any]]:
    """`temporal task-queue describe` of a host queue: the workers polling it for activities."""
    args = ["task-queue", "describe", "--task-queue", queue, "--task-queue-type", "activity"]
    out = await temporal_cli([*args, "-o", "json"], address)
    return list(json.loads(out)["pollers"] or [])


def our_task_types(config: WorkerConfig) -> list[str]:
    return sorted(task["task_type"] for _, task in new_tasks(config.agent_task_dir, set()))


async def test_each_stage_runs_on_its_agents_host(
    client: Client, address: str, tmp_path: Path
) -> None:
    script = PipelineScript(blocks=["world-writable socket"], flags=["pin the image"])
    async with two_hosts(address, tmp_path, script.decide) as (alpha, beta):
        queue = alpha.config.task_queue
        # the dispatcher's file, on the dispatcher's host
        task_id, origin = originating_task(alpha.config)
        [started] = alpha.worker.events("worker_started")
        assert started["host_queue"] == f"{queue}@alpha"
        assert beta.worker.events("worker_started")[0]["host_queue"] == f"{queue}@beta"

        handle = await start_pipeline(client, alpha.config, task_id)
        await wait_stage(handle, "awaiting-approval")
        status = await status_of(handle)
        assert (status.host, status.host_queue) == ("alpha", f"{queue}@alpha")

        # host beta goes away while the pipeline is parked; close-out is beta's (dev) stage
        await beta.worker.kill9()
        approve_by_file(origin, actor="carol")
        await wait_stage(handle, "close")
        status = await status_of(handle)
        assert (status.host, status.host_queue) == ("beta", f"{queue}@beta")
        await asyncio.sleep(3)  # held: nobody else may take it, on any host
        assert "build_closeout" not in our_task_types(alpha.config) + our_task_types(beta.config)
        assert (await status_of(handle)).stage == "close"

        await beta.worker.start()
        result = await asyncio.wait_for(handle.result(), 60)
        await save_history(handle, "pipeline_two_hosts_fewer_events")
        history = await handle.fetch_history()

    assert result.status == "complete"
    # with the dispatcher on a host, the gate's checks are activities on that host's queue
    checks = {how for t, how in activities_run(history) if t == "wait_for_block_resolution"}
    assert checks == {f"{queue}@alpha"}
    assert our_task_types(alpha.config) == ["build_prefab", "security_audit"]
    assert our_task_types(beta.config) == ["build_closeout", "build_plan", "security_fix"]
    # the audit request and triage file with the security agent, the summary and the gate's
    # file with the dispatcher: nothing of them on beta
    assert (alpha.config.audit_dir / "demo-build" / "request.md").exists()
    assert (alpha.config.audit_dir / "demo-build" / "triage-output.yml").exists()
    assert not beta.config.audit_dir.exists()
    assert Path(result.summary_path).is_relative_to(alpha.config.summary_dir.resolve())
    assert not beta.config.summary_dir.exists()
    assert task_files.load_task(origin)["status"] == task_files.APPROVED
    summary = summary_of(result.summary_path)
    assert summary["resolution"]["via"] == "task-file"
    assert summary["phases_completed"] == ALL_PHASES_COMPLETED


async def test_failure_path_closes_task_files_on_every_host(
    client: Client, address: str, tmp_path: Path
) -> None:
    script = PipelineScript(fail_task_type="build_plan")  # dev, on beta, fails implement
    async with two_hosts(address, tmp_path, script.decide) as (alpha, beta):
        task_id, _ = originating_task(alpha.config)
        cause = await failure_of(await start_pipeline(client, alpha.config, task_id))
    assert "implement failed: build_plan could not be done" in str(cause)
    statuses = {
        name: {
            task["task_type"]: task["status"]
            for _, task in new_tasks(host.config.agent_task_dir, set())
        }
        for name, host in (("alpha", alpha), ("beta", beta))
    }
    # end_pipeline closed alpha's (the dispatcher's host), close_pipeline_tasks beta's
    assert statuses == {
        "alpha": {"build_prefab": task_files.CANCELLED},
        "beta": {"build_plan": task_files.CANCELLED},
    }


async def test_a_held_stage_is_announced_from_the_dispatchers_host(
    client: Client, address: str, tmp_path: Path
) -> None:
    """The hold's one notification is sent where every other one is, from the dispatcher's
    host (alpha), though the stage that failed ran on beta; the status still names beta."""
    script = PipelineScript(fail_task_type="build_plan")  # dev, on beta, fails implement
    async with two_hosts(address, tmp_path, script.decide) as (alpha, beta):
        records = {host.worker.name: install_matrix_recorder(host.config) for host in (alpha, beta)}
        task_id, _ = originating_task(alpha.config)
        handle = await start_pipeline(client, alpha.config, task_id, failure_hold_seconds=600)
        await wait_stage(handle, "awaiting-retry")
        await wait_for(lambda: held_messages(records["alpha"]) != [], 20, what="the hold's message")
        status = await status_of(handle)
        assert (status.failed_stage, status.host) == ("implement", "beta")
        code, out = await update(address, handle.id, "abort")
        assert code == 0, out
        cause = await failure_of(handle)
        await save_history(handle, "pipeline_two_hosts_hold_fewer_events")
    assert "implement failed" in str(cause)
    [held] = held_messages(records["alpha"])
    assert held.startswith("[HELD] demo-build: the implement stage")
    assert held_messages(records["beta"]) == []
    queues = [q for t, q in activities_run(await handle.fetch_history()) if t == "notify_hold"]
    assert queues == [f"{alpha.config.task_queue}@alpha"]


async def test_cancel_while_the_failure_path_waits_for_its_host_lets_it_finish(
    client: Client, address: str, tmp_path: Path
) -> None:
    """implement fails on beta while the dispatcher's host alpha is down, so the failure path
    waits for alpha to write the summary. The operator's cancel then does not cut it short:
    once alpha is back the summary is written, the files are closed and the pipeline ends
    FAILED, as it was ending."""
    script = PipelineScript(fail_task_type="build_plan")  # dev, on beta, fails implement
    async with two_hosts(address, tmp_path, script.decide) as (alpha, beta):
        task_id, _ = originating_task(alpha.config)
        handle = await start_pipeline(client, alpha.config, task_id)
        await wait_stage(handle, "implement")
        await alpha.worker.stop()
        await wait_stage(handle, "summary")
        await temporal_cli(["workflow", "cancel", "--workflow-id", handle.id], address)
        await asyncio.sleep(1)  # the cancel is in the history before alpha comes back
        await alpha.worker.start()
        cause = await failure_of(handle)
        await save_history(handle, "pipeline_cancel_while_ending_fewer_events")
        status = await status_of(handle)
    assert "implement failed: build_plan could not be done" in cause.message
    assert (status.stage, status.outcome) == ("failed", "failed")
    [summary] = [summary_of(str(p)) for p in alpha.config.summary_dir.rglob("*.yml")]
    assert (summary["outcome"], summary["failed_stage"]) == ("failed", "implement")
    for host in (alpha, beta):
        statuses = [task["status"] for _, task in new_tasks(host.config.agent_task_dir, set())]
        assert statuses == [task_files.CANCELLED], statuses


async def test_plan_phases_run_on_their_agents_hosts(
    client: Client, address: str, tmp_path: Path
) -> None:
    plan = build_plan_input("two-hosts", phases=2)
    plan.phases[1].agent_type = "claudebox"
    async with two_hosts(address, tmp_path, succeed_all) as (alpha, beta):
        handle = await start_plan(
            client, alpha.config.task_queue, plan, execution_timeout=timedelta(seconds=90)
        )
        result = await handle.result()
        await save_history(handle, "plan_two_hosts")
    assert result == BuildPlanResult(status="complete", phases_run=2)
    assert [t["target_agent"] for t in beta.agent.handled] == ["dev"]
    assert [t["target_agent"] for t in alpha.agent.handled] == ["claudebox"]


# A host that never polls: HOST_WAIT_SECONDS is the bound (short here, 900 s by default).
WAIT = 2


async def test_stage_for_a_host_that_never_polls_fails_naming_it(
    client: Client, address: str, tmp_path: Path
) -> None:
    config = make_config(tmp_path, address)
    task_id, _ = originating_task(config)
    env = worker_env(
        config, WORKER_HOST="alpha", AGENT_HOSTS="claudebox=gamma", HOST_WAIT_SECONDS=str(WAIT)
    )
    async with WorkerProcess(env, tmp_path / "logs"):
        handle = await start_pipeline(client, config, task_id)
        began = time.monotonic()
        await wait_stage(handle, "prefab")
        status = await status_of(handle)
        assert (status.host, status.host_queue) == ("gamma", f"{config.task_queue}@gamma")
        cause = await failure_of(handle)
        took = time.monotonic() - began
        status = await status_of(handle)
        # what OPERATIONS.md has the operator run: gamma's queue has no poller, alpha's has one
        assert await pollers(address, f"{config.task_queue}@gamma") == []
        assert len(await pollers(address, f"{config.task_queue}@alpha")) == 1
    assert cause.type == HOST_UNAVAILABLE
    assert cause.message.startswith(
        f"prefab failed: no worker on host 'gamma' took the prefab stage within {WAIT} s "
        f"(task queue {config.task_queue}@gamma): start worker.py there with WORKER_HOST=gamma"
    )
    # the bound, plus a workflow task or two; a dead host is never held for the stage's 2 h
    assert WAIT <= took < WAIT + 20, took
    assert our_task_types(config) == []
    assert (status.outcome, status.stage) == ("failed", "failed")
    summary = summary_of(cause.message.rsplit("summary: ", 1)[1].rstrip(")"))
    assert summary["failed_stage"] == "prefab"
    assert "host 'gamma'" in summary["error"]


async def test_plan_phase_for_a_host_that_never_polls_fails_naming_it(
    client: Client, address: str, tmp_path: Path
) -> None:
    config = make_config(tmp_path, address)
    env = worker_env(
        config, WORKER_HOST="alpha", AGENT_HOSTS="dev=gamma", HOST_WAIT_SECONDS=str(WAIT)
    )
    async with WorkerProcess(env, tmp_path / "logs"):
        handle = await start_plan(client, config.task_queue, build_plan_input("lost-host"))
        cause = await failure_of(handle)
    assert cause.type == HOST_UNAVAILABLE
    assert "no worker on host 'gamma' took the phase 1 within 2 s" in cause.message
    assert our_task_types(config) == []


# --- the pure parts ---------------------------------------------------------------------------

SETTINGS = PipelineSettings(agent_hosts={"dev": "beta"}, host_wait_seconds=30)


def test_host_queue_form() -> None:
    assert host_queue("helm-build", "alpha") == "helm-build@alpha"


def test_route_of_a_mapped_agent() -> None:
    where = route(SETTINGS, "helm-build", "dev")
    assert where == Route(
        host="beta",
        queue="helm-build@beta",
        wait=timedelta(seconds=30),
        options={
            "task_queue": "helm-build@beta",
            "schedule_to_start_timeout": timedelta(seconds=30),
        },
    )
    unbounded = route(SETTINGS, "helm-build", "dev", bounded=False)
    assert unbounded.options == {"task_queue": "helm-build@beta"}


def test_unmapped_agent_gets_no_options() -> None:
    """No options: the activity's command is the one a single-host worker schedules."""
    assert route(SETTINGS, "helm-build", "claudebox") == Route()
    assert route(PipelineSettings(), "helm-build", "dev").options == {}
    assert on_host(SETTINGS, "helm-build", "") == Route()


def activity_error(cause: BaseException) -> ActivityError:
    error = ActivityError(
        "activity failed",
        scheduled_event_id=1,
        started_event_id=0,
        identity="",
        activity_type="prefab_scaffolding",
        activity_id="1",
        retry_state=None,
    )
    error.__cause__ = cause
    return error


def test_unplaced_names_the_host_only_for_schedule_to_start() -> None:
    where = route(SETTINGS, "helm-build", "dev")
    lost = activity_error(
        TimeoutError("timed out", type=TimeoutType.SCHEDULE_TO_START, last_heartbeat_details=[])
    )
    assert unplaced(lost, where, "the close stage") == (
        "no worker on host 'beta' took the close stage within 30 s (task queue helm-build@beta):"
        " start worker.py there with WORKER_HOST=beta"
    )
    slow = activity_error(
        TimeoutError("timed out", type=TimeoutType.START_TO_CLOSE, last_heartbeat_details=[])
    )
    assert unplaced(slow, where, "the close stage") == ""
    assert unplaced(lost, Route(), "the close stage") == ""
    assert unplaced(activity_error(ApplicationError("no")), where, "the close stage") == ""
