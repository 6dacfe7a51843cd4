"""Our metrics (`build_worker.*`), recorded through Temporal's metric meters.

Through the workflow's meter they are replay-safe, so workflow code records stage metrics
directly; through the activity's meter they carry namespace, task queue and type labels. The
Temporal Core exports them, with the SDK's own `temporal_*` metrics, when OpenTelemetry is on;
when it is off every call here costs next to nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from observability import _state

if TYPE_CHECKING:
    from temporalio.common import MetricMeter

# Labels are closed vocabularies (task types, stage names, outcomes): never build names, ids or
# paths, which would make one time series per build.
TASKS_DISPATCHED = "build_worker.tasks.dispatched"
STAGE_DURATION = "build_worker.stage.duration"
STAGE_FAILURES = "build_worker.stage.failures"
BLOCK_WAIT = "build_worker.block.wait"
AUDIT_ROUNDS = "build_worker.pipeline.audit_rounds"
# What agents report they spent, after the OpenTelemetry GenAI conventions' spirit. Temporal's
# meters count in whole numbers, so the cost is a histogram of each completion's cost: its sum is
# the spend.
AGENT_COST = "agent.cost_usd"
AGENT_TOKENS = "agent.tokens"
# Stages run from seconds to the 7-day block window; Core's default buckets stop far lower.
DURATION_BUCKETS = (
    1,
    5,
    15,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
    7200,
    14400,
    28800,
    86400,
    259200,
    604800,
)
HISTOGRAM_BUCKETS = {STAGE_DURATION: DURATION_BUCKETS, BLOCK_WAIT: DURATION_BUCKETS}
MAX_LABEL_VALUES = 64  # per label: past this, new values are recorded as "other"


def _meter() -> MetricMeter:
    """Temporal's metric meter for where we are: the workflow's (replay-safe), the activity's
    (both add namespace, task queue and type labels), else the telemetry runtime's."""
    from temporalio import activity, workflow
    from temporalio.common import MetricMeter

    if workflow.in_workflow():
        return workflow.metric_meter()
    if activity.in_activity():
        return activity.metric_meter()
    state = _state.current()
    runtime = state.runtime if state is not None else None
    return runtime.metric_meter if runtime is not None else MetricMeter.noop


_label_values: dict[str, set[str]] = {}


def bounded_label(key: str, value: str) -> str:
    """`value`, or "other" once label `key` has MAX_LABEL_VALUES distinct values: cardinality
    stays bounded even if a caller passes something unbounded."""
    seen = _label_values.setdefault(key, set())
    if value in seen:
        return value
    if len(seen) >= MAX_LABEL_VALUES:
        return "other"
    seen.add(value)
    return value


def count_dispatch(task_type: str) -> None:
    """Count one task file dispatched, labelled by task type only (bounded cardinality)."""
    _meter().create_counter(TASKS_DISPATCHED, "Task files written for agents", "{task}").add(
        1, {"task_type": bounded_label("task_type", task_type)}
    )


def record_agent_usage(
    agent: str, stage: str, cost_usd: float | None, tokens: dict[str, int]
) -> None:
    """Record one completion's reported usage: its cost (when known) and its tokens by `type`
    (input, output, cache_read), labelled by agent and stage. Callable like record_stage()."""
    meter = _meter()
    labels = {"agent": bounded_label("agent", agent), "stage": bounded_label("stage", stage)}
    if cost_usd is not None:
        meter.create_histogram_float(
            AGENT_COST, "What an agent reported one completion cost", "USD"
        ).record(max(cost_usd, 0.0), labels)
    counter = meter.create_counter(AGENT_TOKENS, "Tokens agents reported", "{token}")
    for kind, count in tokens.items():
        counter.add(count, {**labels, "type": kind})


def record_audit_rounds(rounds: int, outcome: str) -> None:
    """Record how many audit rounds a pipeline took (1 when nothing looped), once as it ends,
    by its outcome. Callable like record_stage()."""
    _meter().create_histogram(
        AUDIT_ROUNDS, "Audit rounds a pipeline took, the first included", "{round}"
    ).record(max(rounds, 0), {"outcome": bounded_label("outcome", outcome)})


def record_stage(stage: str, seconds: float, outcome: str) -> None:
    """Record one finished stage: its duration, and a failure unless `outcome` is "success".

    `stage` is a stage name from a fixed set ("prefab", "implement", "audit", "triage", "fixes",
    "close"; BuildPlan uses "phase"), never a build name or number. `outcome` is "success",
    "failed" (the agent reported failure), "timed_out", "cancelled" or "error". Callable from
    activities and from workflow code, where Temporal's workflow meter skips replays.
    """
    meter = _meter()
    stage = bounded_label("stage", stage)
    meter.create_histogram_float(
        STAGE_DURATION, "Time from a stage's start to its end", "s"
    ).record(max(seconds, 0.0), {"stage": stage, "outcome": bounded_label("outcome", outcome)})
    if outcome != "success":
        meter.create_counter(STAGE_FAILURES, "Stages that did not succeed", "{stage}").add(
            1, {"stage": stage}
        )


def record_block_wait(seconds: float, decision: str) -> None:
    """Record how long a security block waited for the operator, by how it ended:
    `decision` is "approved", "rejected" or "timed_out". Callable like record_stage()."""
    _meter().create_histogram_float(
        BLOCK_WAIT, "Time a pipeline waited at a security block", "s"
    ).record(max(seconds, 0.0), {"decision": bounded_label("decision", decision)})
