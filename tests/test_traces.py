"""Whole runs seen through a real OTLP/gRPC receiver: one trace each, with their metrics and logs.

The worker runs as a subprocess (`worker.py`, configured by environment as in production), so
its process-global tracer provider and Temporal runtime are its own; agents complete their tasks
with complete_activity.py, also a subprocess. Nothing here mocks OpenTelemetry or Temporal: the
receiver is a gRPC server implementing the collector's TraceService and MetricsService.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter

import observability
from activities import task_files
from config import WorkerConfig
from harness.agents import ScriptedAgent, succeed_all
from harness.cli import run_cli
from harness.env import build_plan_input, cli_env, closed_address, start_plan
from harness.pipelines import (
    PipelineScript,
    approve_by_file,
    install_matrix_recorder,
    originating_task,
    start_pipeline,
)
from harness.worker_process import WorkerProcess, worker_env
from models import BuildPlanResult
from tests.helpers.checks import wait_for
from tests.helpers.otel import (
    OUR_LABELS,
    PLAN,
    SDK_METRICS,
    assert_no_secret,
    latest,
    named,
    one,
    one_phase_dispatched,
    otel_env,
    run_plan,
    tokens_of,
    traced_client_provider,
)
from tests.helpers.queue import STAGE_OF_TYPE
from tests.servers.otlp import OtlpReceiver, Point, Span

# --- Traces, metrics and logs of a whole BuildPlanWorkflow -----------------------------------


async def test_build_plan_is_one_trace_with_metrics_and_logs(
    config: WorkerConfig, address: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    agent_env = cli_env(address, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    workflow_id = f"plan-{uuid.uuid4()}"
    with traced_client_provider(receiver) as provider:
        client = await Client.connect(
            address,
            data_converter=pydantic_data_converter,
            interceptors=[TracingInterceptor(provider.get_tracer("starter"))],
        )
        worker_env_ = otel_env(config, receiver)
        async with (
            WorkerProcess(worker_env_, tmp_path / "logs") as worker,
            ScriptedAgent(config.agent_task_dir, address, succeed_all, env=agent_env) as agent,
        ):
            _, result = await run_plan(client, config, agent, 2, workflow_id)
            assert result == BuildPlanResult(status="complete", phases_run=2)
            # the SDK's own metrics arrive while the worker runs (Core exports every second)
            await receiver.wait(lambda: SDK_METRICS[0] in receiver.metric_names())
    assert worker.returncode == 0, worker.stderr
    assert [code for _, code, _ in agent.results] == [0, 0]

    # Traces: the starter's span is the root; everything else is in its trace.
    start = one(receiver.spans(), "StartWorkflow:BuildPlanWorkflow")
    # the plan reads its settings (AGENT_HOSTS) once, as a local activity, then runs its phases
    wanted = {
        "RunWorkflow:BuildPlanWorkflow": 1,
        "StartActivity:pipeline_settings": 1,
        "RunActivity:pipeline_settings": 1,
        "StartActivity:execute_build_phase": 2,
        "RunActivity:execute_build_phase": 2,
        "DispatchTask:build_phase": 2,
        "CompleteActivity": 2,
        "CompleteWorkflow:BuildPlanWorkflow": 1,
    }

    def trace_complete() -> list[Span]:
        spans = [s for s in receiver.spans() if s.trace_id == start.trace_id]
        return spans if all(len(named(spans, n)) == k for n, k in wanted.items()) else []

    spans = await receiver.wait(trace_complete)
    assert len(spans) == 1 + sum(wanted.values())
    runs = named(spans, "RunActivity:execute_build_phase")
    dispatches = named(spans, "DispatchTask:build_phase")
    completions = named(spans, "CompleteActivity")
    for n, (run, dispatch, done) in enumerate(zip(runs, dispatches, completions, strict=True), 1):
        assert dispatch.parent_span_id == run.span_id
        assert done.parent_span_id == dispatch.span_id  # continued from payload.traceparent
        for span in (run, dispatch):
            assert span.attributes["build"] == PLAN
            assert span.attributes["stage"] == f"phase-{n}"
            assert span.attributes["task_type"] == "build_phase"
        assert done.attributes["completion.status"] == "success"
        assert done.attributes["exit_code"] == 0
        assert done.status_code != 2  # not ERROR
    for span in spans:
        service = (
            "pipeline-starter" if span.name.startswith("StartWorkflow") else "temporal-build-worker"
        )
        assert span.resource["service.name"] == service, span.name
    # the file carries the dispatch span's W3C context
    files = sorted(task_files.iter_task_files(config.agent_task_dir))
    parents = [task_files.load_task(p)["payload"]["traceparent"].split("-") for p in files]
    assert {tuple(p[:3]) for p in parents} == {
        ("00", start.trace_id, d.span_id) for d in dispatches
    }
    assert all(int(p[3], 16) & 1 for p in parents)  # sampled

    # Metrics: ours and the SDK's, from a resource named after the service.
    def metrics_flushed() -> list[Point]:
        points = receiver.points()
        dispatched = latest(points, observability.TASKS_DISPATCHED, task_type="build_phase")
        stage = latest(points, observability.STAGE_DURATION, stage="phase", outcome="success")
        done = SDK_METRICS[1] in {p.metric for p in points}
        ok = dispatched and dispatched.value == 2 and stage and stage.count == 2 and done
        return points if ok else []

    points = await receiver.wait(metrics_flushed)
    assert {p.resource["service.name"] for p in points} == {"temporal-build-worker"}
    ours = [p for p in points if p.metric.startswith("build_worker.")]
    for point in ours:
        assert set(point.attributes) <= OUR_LABELS, point
        assert PLAN not in point.attributes.values() and workflow_id not in repr(point)
    stage = latest(points, observability.STAGE_DURATION, stage="phase", outcome="success")
    assert stage is not None and stage.unit == "s"
    assert stage.bounds == tuple(float(b) for b in observability.DURATION_BUCKETS)
    assert latest(points, observability.STAGE_FAILURES) is None
    assert_no_secret(receiver, tokens_of(config.agent_task_dir))

    # Logs: every stdout line is JSON; activity lines carry the activity's identity and trace;
    # the SDK's stdlib logging comes through the same renderer.
    events = worker.events()
    [enabled] = worker.events("otel_enabled")
    assert enabled["service_name"] == "temporal-build-worker"
    dispatched = worker.events("phase_dispatched")
    assert len(dispatched) == 2
    for event, run in zip(dispatched, runs, strict=True):
        assert event["workflow_id"] == workflow_id
        assert event["run_id"] == run.attributes["temporalRunID"]
        assert event["activity"] == "execute_build_phase"
        assert event["attempt"] == 1
        assert event["trace_id"] == start.trace_id
    sdk = [e for e in events if str(e.get("logger", "")).startswith("temporalio.")]
    assert any("worker shutdown" in e["event"] for e in sdk), sdk
    assert all("timestamp" in e and "level" in e for e in events)


PIPELINE_ACTIVITIES = (
    "prefab_scaffolding",
    "implement_build",
    "request_security_audit",
    "process_triage_output",
    "apply_flag_fixes",
    "notify_blocks",
    "wait_for_block_resolution",
    "close_build",
    "summarize_workflow",
)


async def test_pipeline_is_one_trace(
    config: WorkerConfig, address: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """A whole BuildPipelineWorkflow with flags and an approved block: every stage's activity,
    every dispatch and every agent's completion lands in the starter's trace."""
    install_matrix_recorder(config)
    task_id, origin = originating_task(config)
    build = "otel-build"
    script = PipelineScript(blocks=["root login enabled"], flags=["tidy"])
    agent_env = cli_env(address, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    with traced_client_provider(receiver) as provider:
        client = await Client.connect(
            address,
            data_converter=pydantic_data_converter,
            interceptors=[TracingInterceptor(provider.get_tracer("starter"))],
        )
        worker_env_ = otel_env(config, receiver, BLOCK_POLL_SECONDS="0.2")
        async with (
            WorkerProcess(worker_env_, tmp_path / "logs"),
            ScriptedAgent(config.agent_task_dir, address, script.decide, env=agent_env) as agent,
        ):
            handle = await start_pipeline(client, config, task_id, build_name=build)
            await wait_for(lambda: "input-required" in origin.read_text())
            approve_by_file(origin)
            assert (await handle.result()).status == "complete"
            await wait_for(lambda: len(agent.results) == len(STAGE_OF_TYPE))
    assert all(code == 0 for _, code, _ in agent.results), agent.results

    start = one(receiver.spans(), "StartWorkflow:BuildPipelineWorkflow")
    wanted = {"RunWorkflow:BuildPipelineWorkflow", "CompleteWorkflow:BuildPipelineWorkflow"}
    wanted |= {
        f"{kind}:{a}" for a in PIPELINE_ACTIVITIES for kind in ("StartActivity", "RunActivity")
    }
    wanted |= {f"DispatchTask:{t}" for t in STAGE_OF_TYPE}

    def trace_complete() -> list[Span]:
        spans = [s for s in receiver.spans() if s.trace_id == start.trace_id]
        done = len(named(spans, "CompleteActivity")) == len(STAGE_OF_TYPE)
        return spans if done and wanted <= {s.name for s in spans} else []

    spans = await receiver.wait(trace_complete)
    by_id = {s.span_id: s for s in spans}
    for task_type, stage in STAGE_OF_TYPE.items():
        dispatch = one(spans, f"DispatchTask:{task_type}")
        assert (
            dispatch.attributes["build"],
            dispatch.attributes["stage"],
            dispatch.attributes["task_type"],
        ) == (build, stage, task_type)
        assert by_id[dispatch.parent_span_id].name.startswith("RunActivity:")
        [done] = [
            s
            for s in spans
            if s.name == "CompleteActivity" and s.parent_span_id == dispatch.span_id
        ]
        assert done.attributes["exit_code"] == 0
    # one span per check of the task file; "not approved yet" is benign, never an error span
    gates = named(spans, "RunActivity:wait_for_block_resolution")
    assert gates and all(g.end_ns > g.start_ns and g.status_code != 2 for g in gates), gates
    assert {s.resource["service.name"] for s in spans if s.span_id != start.span_id} == {
        "temporal-build-worker"
    }

    def all_counted() -> list[Point]:
        points = receiver.points()
        counts = [
            latest(points, observability.TASKS_DISPATCHED, task_type=t) for t in STAGE_OF_TYPE
        ]
        stages = [
            latest(points, observability.STAGE_DURATION, stage=s, outcome="success")
            for s in (
                "prefab",
                "implement",
                "audit",
                "triage",
                "fixes",
                "notify",
                "close",
                "summary",
            )
        ]
        wait = latest(points, observability.BLOCK_WAIT, decision="approved")
        done = counts + stages + [wait]
        return points if all(c is not None and (c.value == 1 or c.count == 1) for c in done) else []

    points = await receiver.wait(all_counted)
    assert not [p for p in points if build in repr(p.attributes)]
    assert_no_secret(receiver, tokens_of(config.agent_task_dir))


async def test_untraced_start_is_one_trace_named_by_run_id(
    client: Client, config: WorkerConfig, address: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """A workflow started without tracing (as `temporal workflow start` does) still gives one
    trace: its id is the run id, so an operator can find it from the workflow."""
    agent_env = cli_env(address, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    async with (
        WorkerProcess(otel_env(config, receiver), tmp_path / "logs"),
        ScriptedAgent(config.agent_task_dir, address, succeed_all, env=agent_env) as agent,
    ):
        handle, result = await run_plan(client, config, agent, 2)
        assert result.phases_run == 2
    trace_id = uuid.UUID(handle.result_run_id).hex

    def all_spans() -> list[Span]:
        spans = [s for s in receiver.spans() if s.trace_id == trace_id]
        return spans if len(spans) >= 12 else []

    spans = await receiver.wait(all_spans)
    assert sorted(s.name for s in spans) == sorted(
        [
            "RunWorkflow:BuildPlanWorkflow",
            "CompleteWorkflow:BuildPlanWorkflow",
            "StartActivity:pipeline_settings",
            "RunActivity:pipeline_settings",
        ]
        + [
            "StartActivity:execute_build_phase",
            "RunActivity:execute_build_phase",
            "DispatchTask:build_phase",
            "CompleteActivity",
        ]
        * 2
    )
    # and no span of this workflow went to a trace of its own
    assert {s.trace_id for s in receiver.spans()} == {trace_id}


async def test_cli_continues_env_traceparent_and_marks_failures(
    client: Client, config: WorkerConfig, address: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """Without --task-file the parent comes from TRACEPARENT; a refused completion is an error
    span with its exit code."""
    async with WorkerProcess(worker_env(config), tmp_path / "logs"):
        handle, path = await one_phase_dispatched(client, config)
        task = task_files.load_task(path)
        assert "traceparent" not in task["payload"]  # OTel is off in this worker
        token = task["payload"]["task_token"]
        parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
        env = cli_env(address, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, TRACEPARENT=parent)
        assert (await run_cli(["-", "success", "done"], address, stdin=token, env=env))[0] == 0
        assert (await handle.result()).phases_run == 1
        code, _, err = await run_cli(["-", "failed", "again"], address, stdin=token, env=env)
        assert code == 4, err
    spans = await receiver.wait(lambda: receiver.spans() if len(receiver.spans()) == 2 else [])
    ok, refused = sorted(spans, key=lambda s: s.start_ns)
    for span in spans:
        assert span.trace_id == parent[3:35] and span.parent_span_id == parent[36:52]
    assert (ok.name, ok.status_code, ok.attributes["exit_code"]) == ("CompleteActivity", 0, 0)
    assert (refused.name, refused.status_code) == ("FailActivity", 2)  # ERROR
    assert refused.attributes["exit_code"] == 4
    assert_no_secret(receiver, [token])


async def test_cli_with_collector_down_still_completes(
    client: Client, config: WorkerConfig, address: str, tmp_path: Path
) -> None:
    """Telemetry never costs a completion: with nothing listening at the endpoint the CLI
    delivers, exits 0, says so in one JSON warning line, and keeps stderr for its own errors."""
    closed = f"http://{closed_address()}"  # a collector that is down
    async with WorkerProcess(worker_env(config), tmp_path / "logs"):
        handle, path = await one_phase_dispatched(client, config)
        env = cli_env(address, OTEL_EXPORTER_OTLP_ENDPOINT=closed)
        code, out, err = await run_cli(
            ["--task-file", str(path), "success", "ok"], address, env=env
        )
        assert (await handle.result()).phases_run == 1
    assert (code, err) == (0, "")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(e["event"], e["level"]) for e in lines] == [
        ("otel_export_failed", "warning"),
        ("activity_completed", "info"),
    ]


async def test_worker_with_collector_down_runs_and_says_so(
    client: Client, config: WorkerConfig, address: str, tmp_path: Path
) -> None:
    """An unreachable collector costs nothing but warnings, and those come from the SDK's Rust
    core through the same JSON log."""
    closed = f"http://{closed_address()}"  # a collector that is down
    # the standard timeout bounds the futile flush at shutdown (10 s by default)
    env = worker_env(config, OTEL_EXPORTER_OTLP_ENDPOINT=closed, OTEL_EXPORTER_OTLP_TIMEOUT="1")
    async with (
        WorkerProcess(env, tmp_path / "logs") as worker,
        ScriptedAgent(config.agent_task_dir, address, succeed_all) as agent,
    ):
        _, result = await run_plan(client, config, agent)
        await wait_for(
            lambda: bool([e for e in worker.events() if e.get("logger") == "temporalio.core"]),
            timeout=15,
        )
    assert result.phases_run == 1 and worker.returncode == 0
    core = [e for e in worker.events() if e.get("logger") == "temporalio.core"]
    assert all(e["level"] == "warning" and "metric_export" in e["core_target"] for e in core)
    assert worker.stderr == ""


async def test_failed_dispatch_is_logged_traced_and_counted(
    client: Client, config: WorkerConfig, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """A stage that fails: the SDK's own warning carries the activity's identity, the activity
    span is an error, and the stage counts as a failure."""
    not_a_dir = tmp_path / "queue-is-a-file"
    not_a_dir.write_text("x")
    config = config.model_copy(update={"agent_task_dir": not_a_dir})
    workflow_id = f"plan-{uuid.uuid4()}"
    async with WorkerProcess(otel_env(config, receiver), tmp_path / "logs") as worker:
        plan = build_plan_input(PLAN)
        handle = await start_plan(client, config.task_queue, plan, workflow_id=workflow_id)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    failure = await receiver.wait(
        lambda: latest(receiver.points(), observability.STAGE_FAILURES, stage="phase")
    )
    assert failure.value == 1
    assert (
        latest(receiver.points(), observability.STAGE_DURATION, stage="phase", outcome="error")
        is not None
    )
    warnings = [e for e in worker.events() if e.get("logger") == "temporalio.activity"]
    assert [e["attempt"] for e in warnings] == [1, 2], worker.stdout
    for event in warnings:
        assert event["workflow_id"] == workflow_id and event["activity"] == "execute_build_phase"
        assert event["run_id"] and event["level"] == "warning"
        assert "(" not in event["event"]  # identity as fields, not appended to the message
    runs = await receiver.wait(lambda: named(receiver.spans(), "RunActivity:execute_build_phase"))
    assert {s.status_code for s in runs} == {2}
