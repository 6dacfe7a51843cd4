"""Traces, metrics and logs, checked against a real OTLP/gRPC receiver.

The worker runs as a subprocess (`worker.py`, configured by environment as in production), so
its process-global tracer provider and Temporal runtime are its own; agents complete their tasks
with complete_activity.py, also a subprocess. Nothing here mocks OpenTelemetry or Temporal: the
receiver is a gRPC server implementing the collector's TraceService and MetricsService.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import (
    LoggingConfig,
    OpenTelemetryConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.worker import Worker

import observability
from activities import task_files
from config import WorkerConfig
from harness.agents import ScriptedAgent, succeed_all
from harness.cli import run_cli
from harness.env import CLI, ROOT, build_plan_input, cli_env, closed_address, start_plan
from harness.pipelines import (
    PipelineScript,
    approve_by_file,
    install_matrix_recorder,
    originating_task,
    start_pipeline,
)
from harness.worker_process import WorkerProcess, worker_env
from models import BuildPlanResult
from tests.helpers.checks import one_task_file, wait_for
from tests.helpers.metrics_workflow import MetricsWorkflow, record_from_activity
from tests.helpers.queue import STAGE_OF_TYPE, worker_tasks
from tests.servers.otlp import OtlpReceiver, Point, Span

PLAN = "otel-plan"
SDK_METRICS = ("temporal_request", "temporal_workflow_completed")
OUR_LABELS = {
    "task_type",
    "stage",
    "outcome",
    "decision",
    "namespace",
    "task_queue",
    "workflow_type",
    "activity_type",
}


async def one_phase_dispatched(
    client: Client, config: WorkerConfig
) -> tuple[WorkflowHandle[Any, BuildPlanResult], Path]:
    """Start a one-phase BuildPlan and wait for its task file: an agent's view of a task."""
    handle = await start_plan(client, config.task_queue, build_plan_input(PLAN))
    return handle, await one_task_file(config.agent_task_dir)


async def run_plan(
    client: Client,
    config: WorkerConfig,
    agent: ScriptedAgent,
    phases: int = 1,
    workflow_id: str | None = None,
) -> tuple[WorkflowHandle[Any, BuildPlanResult], BuildPlanResult]:
    """Run a BuildPlan of `phases` phases to its end, and wait until the agent's CLI has exited
    after each completion (the workflow can end first); the handle and the result."""
    plan = build_plan_input(PLAN, phases)
    handle = await start_plan(client, config.task_queue, plan, workflow_id=workflow_id)
    result = await handle.result()
    await wait_for(lambda: len(agent.results) == phases)
    return handle, result


def otel_env(config: WorkerConfig, receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    # spans leave the worker within 0.2 s rather than the SDK's default 5 s
    return worker_env(
        config,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="200",
        **extra,
    )


@contextlib.contextmanager
def traced_client_provider(receiver: OtlpReceiver) -> Iterator[TracerProvider]:
    """The starter's own tracer provider (not the process-global one), exporting to the receiver."""
    provider = TracerProvider(resource=Resource.create({"service.name": "pipeline-starter"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True))
    )
    try:
        yield provider
    finally:
        provider.shutdown()


def one(spans: list[Span], name: str) -> Span:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{name}: {len(found)} spans in {sorted(s.name for s in spans)}"
    return found[0]


def named(spans: list[Span], name: str) -> list[Span]:
    return sorted((s for s in spans if s.name == name), key=lambda s: s.start_ns)


def latest(points: list[Point], metric: str, **labels: Any) -> Point | None:
    """The last exported point of a cumulative metric with these labels."""
    found = [
        p
        for p in points
        if p.metric == metric and all(p.attributes.get(k) == v for k, v in labels.items())
    ]
    return found[-1] if found else None


def tokens_of(queue_dir: Path) -> list[str]:
    """The tokens of every task file the worker wrote (the dispatcher's own file has none)."""
    return [task["payload"]["task_token"] for _, task in worker_tasks(queue_dir)]


def assert_no_secret(receiver: OtlpReceiver, secrets: list[str]) -> None:
    """Task tokens appear in no span name, attribute, metric label or resource."""
    assert secrets
    texts = [repr((s.name, s.attributes, s.resource)) for s in receiver.spans()]
    texts += [repr((p.metric, p.attributes, p.resource)) for p in receiver.points()]
    for secret in secrets:
        assert not any(secret in t or secret[:24] in t for t in texts)


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
    config = replace(config, agent_task_dir=not_a_dir)
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


# --- Metrics recorded from workflow code and activities ---------------------------------------


async def test_stage_metrics_from_workflow_are_replay_safe(
    address: str, receiver: OtlpReceiver
) -> None:
    """record_stage / record_block_wait from workflow code record once, though the workflow
    replays on every activation (no cache); count_dispatch from an activity gets its labels."""
    quiet = LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))
    runtime = Runtime(
        telemetry=TelemetryConfig(
            logging=quiet,
            metrics=OpenTelemetryConfig(
                url=receiver.endpoint,
                metric_periodicity=timedelta(milliseconds=200),
                histogram_bucket_overrides={
                    observability.BLOCK_WAIT: observability.DURATION_BUCKETS
                },
            ),
        )
    )

    def recorded() -> list[Point]:
        points = receiver.points()
        names = {
            observability.BLOCK_WAIT,
            observability.STAGE_DURATION,
            observability.STAGE_FAILURES,
            observability.TASKS_DISPATCHED,
        }
        return (
            points
            if names <= {p.metric for p in points}
            and latest(points, observability.STAGE_DURATION, stage="close")
            else []
        )

    client = await Client.connect(address, runtime=runtime)
    try:
        queue = f"metrics-{uuid.uuid4().hex[:8]}"
        async with Worker(
            client,
            task_queue=queue,
            workflows=[MetricsWorkflow],
            activities=[record_from_activity],
            max_cached_workflows=0,
        ):
            await client.execute_workflow(
                MetricsWorkflow.run, id=f"m-{uuid.uuid4()}", task_queue=queue
            )
        await receiver.wait(recorded)
        await asyncio.sleep(0.6)  # a few more exports: a replayed record would show by now
        points = receiver.points()
    finally:
        # the runtime exports until its last reference goes (and drops what it has not sent)
        del client, runtime
        gc.collect()
    wait = latest(points, observability.BLOCK_WAIT, decision="approved")
    assert wait is not None and (wait.count, wait.value) == (1, 42.0)
    assert wait.attributes["workflow_type"] == "MetricsWorkflow"
    assert 604800.0 in wait.bounds
    close = latest(points, observability.STAGE_DURATION, stage="close", outcome="success")
    assert close is not None and (close.count, close.value) == (1, 7.0)
    audit = latest(points, observability.STAGE_DURATION, stage="audit", outcome="failed")
    assert audit is not None and audit.attributes["activity_type"] == "record_from_activity"
    failures = latest(points, observability.STAGE_FAILURES, stage="audit")
    assert failures is not None and failures.value == 1
    assert latest(points, observability.STAGE_FAILURES, stage="close") is None
    dispatched = latest(points, observability.TASKS_DISPATCHED, task_type="security_audit")
    assert dispatched is not None and dispatched.value == 1


def test_label_values_are_bounded() -> None:
    """A caller passing an unbounded value (a build name, a number) cannot grow a label past
    MAX_LABEL_VALUES distinct values."""
    seen = {
        observability.metrics.bounded_label("stage-test", f"build-{i}")
        for i in range(observability.MAX_LABEL_VALUES + 50)
    }
    assert len(seen) == observability.MAX_LABEL_VALUES + 1
    assert "other" in seen
    assert observability.metrics.bounded_label("stage-test", "build-0") == "build-0"


# --- Opt-in: nothing without the variable, one warning without the packages ------------------

NO_OTEL_SCRIPT = textwrap.dedent("""
    import asyncio, json, os, sys
    from pathlib import Path
    import worker, observability
    from activities import task_files
    from config import load_config
    from models import BuildPlanInput, PhaseSpec

    async def main():
        config = load_config()
        observability.configure_logging("WARNING")
        assert observability.init_observability() is False
        client = await worker.connect(config, **observability.client_options())
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
    code = (
        "import sys, json; before = set(sys.modules); import observability; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    added = {m.split(".")[0] for m in json.loads(out)}
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
