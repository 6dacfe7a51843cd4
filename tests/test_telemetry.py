"""OpenTelemetry is opt-in: without OTEL_EXPORTER_OTLP_ENDPOINT nothing of it is loaded, without
its packages one warning, and an unusable endpoint is a config error."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client

from activities import task_files
from config import WorkerConfig
from harness.agents import ScriptedAgent, succeed_all
from harness.env import CLI, ROOT, cli_env
from harness.worker_process import WorkerProcess, worker_env
from models import BuildPlanResult
from tests.helpers.checks import modules_imported_by
from tests.helpers.otel import one_phase_dispatched, otel_env, run_plan
from tests.servers.otlp import OtlpReceiver

# --- Opt-in: nothing without the variable, one warning without the packages ------------------

NO_OTEL_SCRIPT = textwrap.dedent("""
    import asyncio, json, os, sys
    from pathlib import Path
    import observability, worker
    from temporal_connect import connect
    from activities import task_files
    from config import load_config
    from models import BuildPlanInput, PhaseSpec

    async def main():
        config = load_config()
        observability.configure_logging("WARNING")
        assert observability.init_observability() is False
        client = await connect(config, **observability.client_options())
        async with worker.build_worker(client, config, **observability.worker_options()):
            handle = await client.start_workflow(
                "BuildPlanWorkflow",
                BuildPlanInput(plan_name="quiet", phases=[PhaseSpec(1, "dev", "one phase")]),
                id=sys.argv[1], task_queue=config.task_queue)
            while not list(task_files.iter_task_files(config.agent_task_dir)):
                await asyncio.sleep(0.05)
            [path] = task_files.iter_task_files(config.agent_task_dir)
            print(json.dumps({"task_file": str(path)}), flush=True)
            result = await handle.result()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"
                        or m.startswith("temporalio.contrib.opentelemetry"))
        print(json.dumps({"result": result, "otel_modules": loaded}), flush=True)

    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # teardown can crash once the Temporal runtime has run (docs/DESIGN.md)
""")


async def test_without_endpoint_nothing_of_opentelemetry_is_loaded(
    config: WorkerConfig, address: str
) -> None:
    """The worker and the CLI, through a whole BuildPlan phase, never import opentelemetry."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        NO_OTEL_SCRIPT,
        f"plan-{uuid.uuid4()}",
        cwd=ROOT,
        env=worker_env(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    first: dict[str, Any] = {}
    while "task_file" not in first:  # the worker's own log lines come first
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
    task_file = first["task_file"]
    # the agent's CLI, with the interpreter listing every module it imports
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-X",
        "importtime",
        CLI,
        "--task-file",
        task_file,
        "success",
        "ok",
        env=cli_env(address),
        cwd="/",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, cli_err = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode == 0, cli_err.decode()[-2000:]
    imported = [
        ln.rsplit("|", 1)[-1].strip()
        for ln in cli_err.decode().splitlines()
        if ln.startswith("import time:")
    ]
    assert "temporalio.client" in imported  # the listing is real
    assert not [m for m in imported if m.startswith(("opentelemetry", "observability"))]
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    report = json.loads(out.decode().splitlines()[-1])
    assert report["result"]["status"] == "complete"
    assert report["otel_modules"] == []


def test_observability_imports_only_the_standard_library() -> None:
    """Workflow modules import observability: it must stay light and free of OTel until used."""
    added = {m.split(".")[0] for m in modules_imported_by("observability")}
    assert not added & {"opentelemetry", "temporalio", "structlog", "yaml", "pydantic", "grpc"}
    # our own modules, each standard-library-only itself (secret_files: config's file check)
    ours = {"observability", "config", "exceptions", "secret_files"}
    assert added <= ours | set(sys.stdlib_module_names)


BLOCK_OTEL = (
    "import runpy, sys; sys.modules['opentelemetry'] = None; sys.argv = ['worker.py']; "
    "runpy.run_path('worker.py', run_name='__main__')"
)


async def test_missing_packages_warn_once_and_the_worker_runs(
    client: Client, config: WorkerConfig, address: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    env = otel_env(config, receiver)
    async with (
        WorkerProcess(env, tmp_path / "logs", python_args=["-c", BLOCK_OTEL]) as worker,
        ScriptedAgent(config.agent_task_dir, address, succeed_all) as agent,
    ):
        _, result = await run_plan(client, config, agent)
    assert result == BuildPlanResult(status="complete", phases_run=1)
    assert worker.returncode == 0, worker.stderr
    [warning] = worker.events("otel_unavailable")
    assert warning["level"] == "warning"
    assert "missing opentelemetry" in warning["reason"]
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in warning["reason"]
    assert not worker.events("otel_enabled")
    assert (
        "traceparent"
        not in task_files.load_task(next(task_files.iter_task_files(config.agent_task_dir)))[
            "payload"
        ]
    )
    assert receiver.spans() == [] and receiver.points() == []


async def test_cli_warns_once_without_packages(
    client: Client, config: WorkerConfig, address: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """The CLI with the variable set but no packages: one warning line, and the completion is
    still delivered."""
    async with WorkerProcess(worker_env(config), tmp_path / "logs"):
        handle, path = await one_phase_dispatched(client, config)
        code = (
            f"import runpy, sys; sys.path.insert(0, {str(ROOT)!r}); "
            "sys.modules['opentelemetry'] = None; "
            f"sys.argv = [{CLI!r}, '--task-file', {str(path)!r}, 'success', 'ok']; "
            f"runpy.run_path({CLI!r}, run_name='__main__')"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            cwd="/",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(address, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint),
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert (await handle.result()).phases_run == 1
    lines = [json.loads(ln) for ln in out.decode().splitlines()]
    assert [(e["event"], e["level"]) for e in lines] == [
        ("otel_unavailable", "warning"),
        ("activity_completed", "info"),
    ]
    assert err.decode() == ""


async def test_unusable_endpoint_is_a_config_error(config: WorkerConfig, tmp_path: Path) -> None:
    """A malformed endpoint fails the start with one line naming the variable (exit 2), as
    every other bad setting does; an unreachable collector, by contrast, only logs warnings."""
    env = worker_env(config, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:notaport")
    code, _, err = await WorkerProcess(env, tmp_path / "logs").run_to_exit()
    assert code == 2
    assert err.splitlines() == [
        "temporal-build-worker: ConfigError: OTEL_EXPORTER_OTLP_ENDPOINT="
        "'http://127.0.0.1:notaport' is not usable: Invalid OTel URL: invalid port number"
    ]
