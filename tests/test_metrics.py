"""Metrics recorded from workflow code and activities, as a real OTLP receiver gets them:
replay-safe from workflows, and with bounded label values."""

from __future__ import annotations

import asyncio
import gc
import uuid
from datetime import timedelta

from temporalio.client import Client
from temporalio.runtime import (
    LoggingConfig,
    OpenTelemetryConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.worker import Worker

import observability
from tests.helpers.metrics_workflow import MetricsWorkflow, record_from_activity
from tests.helpers.otel import latest
from tests.servers.otlp import OtlpReceiver, Point

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
