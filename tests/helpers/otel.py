"""Reading what a real OTLP receiver got: spans by name, metric points, tokens kept out, and the
worker's environment that sends there."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from temporalio.client import Client, WorkflowHandle

from config import WorkerConfig
from harness.agents import ScriptedAgent
from harness.env import build_plan_input, start_plan
from harness.worker_process import worker_env
from models import BuildPlanResult
from tests.helpers.checks import one_task_file, wait_for
from tests.helpers.queue import worker_tasks
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
