"""The deploy check (`worker.py --check-open-runs`, deploy_check.py): open runs on the dev server,
parked where pipelines park, replayed on the shipped workflow code and on a changed one.

The changed code (tests/helpers/changed_pipeline.py) adds a timer before the block gate without
a patch: the check must name the pipeline parked at the gate and only it. The command line runs
as the worker runs, as a process with the worker's environment.
"""

from __future__ import annotations

import asyncio
import os
import pty
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.client import Interceptor as ClientInterceptor
from temporalio.worker import Interceptor as WorkerInterceptor
from temporalio.worker import Replayer

import deploy_check
import worker as worker_module
from config import WorkerConfig
from harness.agents import Decision, new_tasks, worker_and_agent
from harness.cli import run_cli
from harness.env import (
    ROOT,
    build_plan_input,
    closed_address,
    make_config,
    run_process,
    running_worker,
    start_plan,
)
from harness.pipelines import PipelineScript, originating_task, start_pipeline, wait_stage
from harness.worker_process import worker_command, worker_env
from program_exit import EXIT_CONFIG, EXIT_UNREACHABLE
from tests.helpers.changed_pipeline import TimerBeforeGate
from tests.helpers.checks import stderr_line, task_files_in, wait_for
from tests.helpers.deploy import (
    bash,
    commit_change,
    documented_block,
    ensure_venv_current,
    git,
    pm2_daemon,
    upstream_and_checkout,
)
from tests.helpers.figures import Figures
from workflows.build_plan import BuildPlanWorkflow

HOLD = 600.0
SUMMARY = re.compile(r"^(\d+) open runs replay on this code, (\d+) would break$")


def on_queue(config: WorkerConfig) -> str:
    """The check's query, narrowed to one test's task queue: the dev server is shared."""
    return f"{deploy_check.OPEN_RUNS} AND TaskQueue='{config.task_queue}'"


async def listed(client: Client, query: str, count: int) -> bool:
    """Does visibility list `count` runs for `query` yet? (It lags the server a moment.)"""
    return (await client.count_workflows(query)).count == count


async def terminate_all(handles: Iterable[WorkflowHandle[Any, Any]]) -> None:
    """Ends the test's runs, so no later check on the shared server has to replay them."""
    for handle in handles:
        try:
            await handle.terminate(reason="test over")
        except Exception:  # noqa: BLE001 - one already closed
            pass


async def check_command(config: WorkerConfig, **env: str) -> tuple[int, str, str]:
    """`worker.py --check-open-runs` as a process, with the worker's environment for `config`
    (and `env`): (exit status, stdout, stderr)."""
    argv = [*worker_command(), "--check-open-runs"]
    return await run_process(argv, worker_env(config, **env), ROOT, timeout=300)


@asynccontextmanager
async def parked_runs(
    client: Client, config: WorkerConfig
) -> AsyncIterator[dict[str, WorkflowHandle[Any, Any]]]:
    """Four open runs on `config`'s queue, each where a run waits for days: a pipeline at the
    block gate, one held after a failed implement stage, one waiting for its prefab agent,
    and a plan waiting for its phase's agent. Terminated afterwards."""
    ids = {name: f"deploy-{name}-{uuid.uuid4().hex[:8]}" for name in ("gate", "held", "prefab")}
    scripts = {
        ids["gate"]: PipelineScript(blocks=["world-writable socket"]),
        ids["held"]: PipelineScript(fail_task_type="build_plan"),
    }

    def decide(task: dict[str, Any]) -> Decision:
        script = scripts.get(task["payload"].get("workflow_id", ""))
        return script.decide(task) if script else None  # the others' agents never answer

    handles: dict[str, WorkflowHandle[Any, Any]] = {}
    try:
        async with worker_and_agent(client, config, decide):
            for name, workflow_id in ids.items():
                task_id, _ = originating_task(config)
                hold = HOLD if name == "held" else None
                handles[name] = await start_pipeline(
                    client, config, task_id, workflow_id=workflow_id, failure_hold_seconds=hold
                )
            handles["plan"] = await start_plan(client, config.task_queue, build_plan_input("p"))
            await wait_stage(handles["gate"], "awaiting-approval")
            await wait_stage(handles["held"], "awaiting-retry")
            await wait_stage(handles["prefab"], "prefab")
            yield handles
    finally:
        await terminate_all(handles.values())


async def test_parked_runs_replay_and_a_change_names_the_run_it_breaks(
    client: Client, config: WorkerConfig, tmp_path: Path
) -> None:
    async with parked_runs(client, config) as runs:
        ids = {name: handle.id for name, handle in runs.items()}
        await wait_for(
            lambda: listed(client, on_queue(config), 4), timeout=15, what="all four listed"
        )

        shipped = await deploy_check.check_open_runs(
            client, worker_module.workflows(), query=on_queue(config)
        )
        assert sorted(shipped.replayed) == sorted(ids.values())
        assert shipped.broken == [] and shipped.closed == []
        assert shipped.exit_status == 0
        assert shipped.report() == ["4 open runs replay on this code, 0 would break"]

        changed = await deploy_check.check_open_runs(
            client, [TimerBeforeGate, BuildPlanWorkflow], query=on_queue(config)
        )
        assert [b.workflow_id for b in changed.broken] == [ids["gate"]]
        assert sorted(changed.replayed) == sorted([ids["held"], ids["prefab"], ids["plan"]])
        assert changed.exit_status == deploy_check.EXIT_BREAKS == 1
        [line, summary] = changed.report()
        assert line.startswith(f"{ids['gate']} would break: [TMPRL1100] Nondeterminism error: ")
        assert "Failure {" not in line and "\n" not in line, line
        assert summary == "3 open runs replay on this code, 1 would break"

        # the command line, on the shipped code, over every open run of the namespace
        code, out, err = await check_command(config)
        assert code == 0, (out, err)
        assert err == ""
        *broken, last = out.splitlines()
        found = SUMMARY.match(last)
        assert found and int(found.group(1)) >= 4 and found.group(2) == "0", out
        assert broken == [], out


async def test_a_run_closed_meanwhile_is_skipped_and_counted(
    client: Client, config: WorkerConfig
) -> None:
    """Listed, then closed before its history is read: the check skips it and says so. Here the
    query lists closed runs too, which is how a run closed after the listing looks to it."""
    task_id, _ = originating_task(config)
    handle = await start_pipeline(client, config, task_id)
    await handle.terminate(reason="closed while checked")
    query = f"WorkflowId='{handle.id}'"
    await wait_for(lambda: listed(client, query, 1), timeout=15, what="the run listed")
    tally = await deploy_check.check_open_runs(client, worker_module.workflows(), query=query)
    assert tally.closed == [handle.id]
    assert tally.replayed == [] and tally.broken == []
    assert tally.exit_status == 0
    assert tally.report() == [
        "1 runs closed while being checked: skipped",
        "0 open runs replay on this code, 0 would break",
    ]


class BothSides(ClientInterceptor, WorkerInterceptor):
    """An interceptor of the kind a client hands to its workers (as tracing is)."""


async def test_the_replayer_runs_workflows_as_the_worker_does(
    client: Client, config: WorkerConfig
) -> None:
    """Converter, runtime, interceptors and runner: what build_worker's Worker uses."""
    traced = Client(
        client.service_client,
        namespace=client.namespace,
        data_converter=client.data_converter,
        interceptors=[BothSides()],
    )
    async with running_worker(traced, config) as worker:
        used = worker.config(active_config=True)
    replayer: Replayer = deploy_check.replayer(traced, worker_module.workflows())
    replays = replayer.config()
    assert replays["workflows"] == used["workflows"]
    assert replays["data_converter"] is traced.data_converter
    assert replays["runtime"] is traced.service_client.config.runtime
    assert [type(i) for i in replays["interceptors"]] == [BothSides]
    assert replays["interceptors"] == [*traced.config()["interceptors"], *used["interceptors"]]
    runner, worker_runner = replays["workflow_runner"], used["workflow_runner"]
    assert type(runner) is type(worker_runner) and vars(runner) == vars(worker_runner)
    assert replays["namespace"] == traced.namespace


@pytest.mark.unit
async def test_a_bad_setting_exits_2(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    code, out, err = await check_command(config, TEMPORAL_ADDRESS="nowhere")
    assert code == EXIT_CONFIG == 2
    assert out == ""
    assert "TEMPORAL_ADDRESS='nowhere' is not host:port" in stderr_line(err)


async def test_a_namespace_the_server_does_not_know_exits_2(config: WorkerConfig) -> None:
    code, out, err = await check_command(config, TEMPORAL_NAMESPACE="no-such-namespace")
    assert code == EXIT_CONFIG
    assert out == ""
    line = stderr_line(err)
    assert line.startswith("temporal-build-worker: ConfigError: ")
    assert "TEMPORAL_NAMESPACE='no-such-namespace': " in line and "not found" in line, line


@pytest.mark.unit
async def test_temporal_unreachable_exits_3(tmp_path: Path) -> None:
    config = make_config(tmp_path, closed_address())
    code, out, err = await check_command(config)
    assert code == EXIT_UNREACHABLE == 3
    assert out == ""
    assert "cannot reach Temporal at" in stderr_line(err)


@pytest.mark.unit
def test_one_line() -> None:
    assert deploy_check.one_line("a\n  b\tc \r\n") == "a b c"
    assert deploy_check.one_line("id\x1b[2J\x00") == "id\\x1b[2J\\x00"


@pytest.mark.unit
def test_failure_message_is_cores_message_when_it_hands_over_its_dump() -> None:
    dump = (
        "Workflow activation completion failed: Failure { failure: Some(Failure { message: "
        '"[TMPRL1100] Nondeterminism error: \\"x\\" differs", source: "" }) }'
    )
    assert deploy_check.failure_message(RuntimeError(dump)) == (
        '[TMPRL1100] Nondeterminism error: "x" differs'
    )
    assert deploy_check.failure_message(RuntimeError("patch\n  gone")) == "patch gone"
    assert deploy_check.failure_message(RuntimeError()) == "RuntimeError"


@pytest.mark.unit
def test_progress_only_for_many_runs_on_a_terminal() -> None:
    few, many = StringIO(), StringIO()
    shown = deploy_check.Progress(few, deploy_check.PROGRESS_FROM - 1)
    for _ in range(deploy_check.PROGRESS_FROM - 1):
        shown.step()
    shown.clear()
    assert few.getvalue() == ""
    n = deploy_check.PROGRESS_FROM
    shown = deploy_check.Progress(many, n)
    for _ in range(n):
        shown.step()
    assert many.getvalue().endswith(f"\rchecked {n} of {n} open runs")
    shown.clear()
    assert many.getvalue().endswith("\r\033[K")
    assert deploy_check.Progress(None, 500).stream is None


# The line the deploy test changes upstream: the first of the pipeline's run method.
RUN_HEAD = (
    "        state = self._state\n"
    "        # asked first, so the run settles it once (workflows/versions.py)\n"
    "        if versions.patched(versions.FEWER_EVENTS):\n"
)
UNGUARDED = "        await workflow.sleep(1)  # a new timer, unguarded\n" + RUN_HEAD
GUARDED = (
    "        if workflow.patched('deploy-test-timer'):  # the same timer, behind a patch\n"
    "            await workflow.sleep(1)\n" + RUN_HEAD
)
PIPELINE_CODE = "workflows/build_pipeline_workflow.py"


def counts(out: str) -> tuple[int, int] | None:
    """The check's (replayed, would break) in `out`, among the other commands' lines."""
    found = [m for m in map(SUMMARY.match, out.splitlines()) if m]
    return (int(found[0].group(1)), int(found[0].group(2))) if len(found) == 1 else None


def task_types(config: WorkerConfig) -> list[str]:
    return [t["task_type"] for _, t in new_tasks(config.agent_task_dir, set())]


async def test_the_documented_deploy_under_pm2(
    client: Client, address: str, tmp_path: Path
) -> None:
    """docs/OPERATIONS.md's deploy blocks, verbatim, in a checkout PM2 runs: a change without a
    patch stops the sequence before `pm2 reload`, naming the parked pipeline, and the checkout
    goes back; the same change behind a patch is reloaded and the pipeline carries on."""
    deploy = documented_block(ROOT / "docs" / "OPERATIONS.md", "deploy")
    back = documented_block(ROOT / "docs" / "OPERATIONS.md", "deploy-back")
    upstream, checkout = upstream_and_checkout(tmp_path)
    today = git(checkout, "rev-parse", "HEAD")
    config = make_config(tmp_path, address)
    env = {k: v for k, v in worker_env(config).items() if k != "AGENT_COMMANDS_FILE"}
    handle: WorkflowHandle[Any, Any] | None = None
    async with pm2_daemon(tmp_path, env) as pm2:
        try:
            await pm2.run("start", "ecosystem.config.js", cwd=checkout)
            await wait_for(lambda: pm2.started() == 1, timeout=60, what="the worker under PM2")
            running = await pm2.pid()
            task_id, _ = originating_task(config)
            handle = await start_pipeline(client, config, task_id)
            await wait_for(lambda: task_types(config) == ["build_prefab"], timeout=60)

            commit_change(upstream, PIPELINE_CODE, RUN_HEAD, UNGUARDED, "a timer, no patch")
            ensure_venv_current(checkout)
            code, out, err = await bash(deploy, pm2.env, checkout)
            assert code != 0, (out, err)
            assert f"{handle.id} would break: [TMPRL1100] Nondeterminism error: " in out, out
            found = counts(out)
            assert found and found[1] >= 1, out
            assert git(checkout, "rev-parse", "HEAD") != today  # pulled, never reloaded
            assert await pm2.pid() == running and pm2.started() == 1

            code, out, err = await bash(back, pm2.env, checkout)
            assert code == 0, (out, err)
            assert git(checkout, "rev-parse", "HEAD") == today

            commit_change(upstream, PIPELINE_CODE, UNGUARDED, GUARDED, "the timer behind a patch")
            ensure_venv_current(checkout)
            code, out, err = await bash(deploy, pm2.env, checkout)
            assert code == 0, (out, err)
            found = counts(out)
            assert found and found[0] >= 1 and found[1] == 0, out
            assert GUARDED in (checkout / PIPELINE_CODE).read_text()
            await wait_for(lambda: pm2.started() == 2, timeout=60, what="the reloaded worker")
            assert await pm2.pid() not in (0, running)

            # the parked pipeline carries on under the new process
            [prefab] = [p for p, t in new_tasks(config.agent_task_dir, set())]
            code, _, err = await run_cli(["--task-file", str(prefab), "success", "done"], address)
            assert code == 0, err
            await wait_for(
                lambda: sorted(task_types(config)) == ["build_plan", "build_prefab"], timeout=60
            )
        finally:
            if handle is not None:
                await terminate_all([handle])


MANY = 200


def read_terminal(fd: int) -> bytes:
    """Everything written to a pseudo-terminal until its last writer closes it."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: no writer left
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.slow
async def test_200_open_runs_are_checked_with_progress_on_a_terminal(
    client: Client, address: str, tmp_path: Path, figures: Figures
) -> None:
    """200 pipelines waiting for their prefab agent, checked by the command line with its
    stderr on a terminal: all replay, progress is shown, and the time is a figure."""
    config = make_config(tmp_path, address)
    handles: list[WorkflowHandle[Any, Any]] = []
    try:
        async with running_worker(client, config):
            for batch in range(0, MANY, 50):
                handles += await asyncio.gather(
                    *(start_pipeline(client, config, f"many-{i}") for i in range(batch, batch + 50))
                )
            await wait_for(
                lambda: len(task_files_in(config.agent_task_dir)) == MANY,
                timeout=300,
                interval=0.5,
                what=f"{MANY} pipelines waiting at prefab",
            )
        await wait_for(lambda: listed(client, on_queue(config), MANY), timeout=30)
        terminal, writer = pty.openpty()
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *worker_command(),
            "--check-open-runs",
            env=worker_env(config),
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=writer,
        )
        os.close(writer)
        shown = asyncio.create_task(asyncio.to_thread(read_terminal, terminal))
        out, _ = await asyncio.wait_for(proc.communicate(), 300)
        took = time.monotonic() - started
        progress = (await shown).decode(errors="replace")
        os.close(terminal)
    finally:
        await terminate_all(handles)
    assert proc.returncode == 0, (out, progress)
    found = counts(out.decode())
    assert found and found[0] >= MANY and found[1] == 0, out
    assert re.search(rf"\rchecked {found[0]} of \d+ open runs", progress), progress[-500:]
    assert progress.endswith("\r\033[K"), progress[-100:]
    figures.record("deploy check", f"worker.py --check-open-runs, {found[0]} open runs (s)", took)
    print(f"{found[0]} open runs checked in {took:.1f} s")
