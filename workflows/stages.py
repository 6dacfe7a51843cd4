"""The stage table: one frozen row per stage, for both workflows.

A row is everything that varies from one stage to the next: the activity, who does it (and so on
which host it runs), its time limits and retry policy, whether a failure can be held or skipped,
what the summary calls it, and how a retry's note reaches the agent. The workflows keep the
control flow (conditions, the gate, the failure path) and run rows; `workflows/stage_runner.py`
runs one row. The README's stage table is held against `PIPELINE` by tests/test_stages.py.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, is_dataclass, replace
from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.agent_stages import AgentStageActivities as AgentStages
    from activities.build_phase import BuildPhaseActivities
    from activities.build_pipeline_activities import PipelineActivities as WorkerStages
    from exceptions import PHASE_FAILED, TRIAGE_MALFORMED
    from models import AUDIT_AGENT, DISPATCHER, PREFAB_AGENT

# An activity, by method reference: its registered name and result type come from it.
Activity = Callable[..., Awaitable[Any]]

# The agent of a stage that the pipeline's input names (`target_agent`).
TARGET_AGENT = "<target_agent>"

# Stages the worker runs itself (triage, summary, the failure path's clean-up) read or write a
# few local files: an attempt lost with a killed worker is retried after this, not after the
# original's 30-60 min. notify_blocks heartbeats after each message instead (each send is
# capped at 15 s), so its 30 min bound stays for many blocks.
LOCAL_STAGE_TIMEOUT = timedelta(minutes=2)

AGENT_RETRY = RetryPolicy(maximum_attempts=1, non_retryable_error_types=[PHASE_FAILED])
TRIAGE_RETRY = RetryPolicy(
    maximum_attempts=5,
    initial_interval=timedelta(minutes=2),
    maximum_interval=timedelta(minutes=15),
    non_retryable_error_types=[TRIAGE_MALFORMED],
)
THREE_TRIES = RetryPolicy(maximum_attempts=3)
# The gate's fallback check reads the file once per attempt; its activity sets each retry's
# delay (BLOCK_POLL_SECONDS, or 12x that for a file the watcher covers), so this interval only
# applies to unexpected failures.
GATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)
)
GATE_TIMEOUT = timedelta(days=7)
# Where a run waits when its agents spent its budget (workflows/budget.py): not a row, no activity.
AWAITING_BUDGET = "awaiting-budget"
# One check reads one file; a check lost with a dead worker or server is retried this soon.
GATE_CHECK_TIMEOUT = timedelta(seconds=10)
# Since fewer-events a pipeline whose dispatcher is any worker of its queue (no host for it in
# AGENT_HOSTS) checks by a local activity: one marker in the history, inside the workflow task,
# instead of an activity's three events and a workflow task of its own. Its retries stay short,
# so a wait's timers are never held up for long.
GATE_LOCAL_CHECK = workflow.LocalActivityConfig(
    start_to_close_timeout=GATE_CHECK_TIMEOUT,
    schedule_to_close_timeout=timedelta(minutes=5),
    retry_policy=GATE_RETRY,
)


@dataclass(frozen=True)
class Stage:
    """One stage of a workflow, as data."""

    name: str  # its BuildStage value, task-id stage and summary key
    activity: Activity
    # Who does it: an agent stage's task file goes to this agent (TARGET_AGENT: the input's);
    # a worker stage runs on this agent's host (the files it reads or writes are there).
    agent: str
    kind: Literal["agent", "worker"]
    # Time limits and retry policy. An agent stage also gets AGENT_HEARTBEAT_TIMEOUT's
    # heartbeat timeout from the run's settings.
    limits: workflow.ActivityConfig = field(default_factory=lambda: workflow.ActivityConfig())
    holdable: bool = True  # a failure may park for the operator's retry/skip/abort
    skippable: bool = True  # a held failure may be skipped (not so for the security gate)
    in_summary: bool = False  # listed in the summary's `phases_completed`
    # How a retry's note reaches the agent, as data: the retry's arguments from the first
    # dispatch's and the note. Worker stages take no note (None).
    with_note: NoteRule | None = None
    metric: str = ""  # the stage label of its metrics, when not its name
    does: str = ""  # a worker stage's activity summary in the UI

    @property
    def metric_stage(self) -> str:
        return self.metric or self.name


NoteRule = Callable[[tuple[Any, ...], str], tuple[Any, ...]]


def note_argument(activity: Activity) -> NoteRule:
    """The note as the activity's `operator_note` argument: in its place when the dispatch's
    arguments reach it, else appended (they then stop right before it)."""
    at = list(inspect.signature(activity).parameters).index("operator_note") - 1  # after self

    def with_note(args: tuple[Any, ...], note: str) -> tuple[Any, ...]:
        return (*args[:at], note, *args[at + 1 :])

    return with_note


def note_field(args: tuple[Any, ...], note: str) -> tuple[Any, ...]:
    """The note as the `operator_note` field of the activity's one input."""
    return (replace(args[0], operator_note=note),)


def with_argument(
    activity: Activity, args: tuple[Any, ...], name: str, value: Any
) -> tuple[Any, ...]:
    """`args` with `value` as the activity's parameter `name`: the field of its one dataclass
    input, or the positional argument, the defaults of any before it filled in."""
    params = list(inspect.signature(activity).parameters.values())[1:]  # after self
    first = args[0] if args else None
    if len(params) == 1 and is_dataclass(first) and not isinstance(first, type):
        return (replace(first, **{name: value}),)
    at = [p.name for p in params].index(name)
    filled = (*args, *(p.default for p in params[len(args) : at]))
    return (*filled[:at], value, *filled[at + 1 :])


def _agent_stage(name: str, activity: Activity, agent: str, hours: int, **more: Any) -> Stage:
    limits = workflow.ActivityConfig(
        start_to_close_timeout=timedelta(hours=hours), retry_policy=AGENT_RETRY
    )
    return Stage(
        name,
        activity,
        agent,
        "agent",
        limits,
        in_summary=True,
        with_note=note_argument(activity),
        **more,
    )


def _limits(
    timeout: timedelta,
    retry: RetryPolicy,
    *,
    heartbeat: timedelta | None = None,
    schedule_to_close: timedelta | None = None,
) -> workflow.ActivityConfig:
    limits = workflow.ActivityConfig(start_to_close_timeout=timeout, retry_policy=retry)
    if heartbeat is not None:
        limits["heartbeat_timeout"] = heartbeat
    if schedule_to_close is not None:
        limits["schedule_to_close_timeout"] = schedule_to_close
    return limits


# BuildPipelineWorkflow, in the order it runs them (README, "stages").
PREFAB = _agent_stage("prefab", AgentStages.prefab_scaffolding, PREFAB_AGENT, 2)
IMPLEMENT = _agent_stage("implement", AgentStages.implement_build, TARGET_AGENT, 4)
AUDIT = _agent_stage("audit", AgentStages.request_security_audit, AUDIT_AGENT, 4, skippable=False)
TRIAGE = Stage(
    "triage",
    WorkerStages.process_triage_output,
    AUDIT_AGENT,
    "worker",
    _limits(LOCAL_STAGE_TIMEOUT, TRIAGE_RETRY),
    skippable=False,
    in_summary=True,
    does="reads the audit's triage-output.yml",
)
FIXES = _agent_stage("fixes", AgentStages.apply_flag_fixes, TARGET_AGENT, 2)
NOTIFY = Stage(
    "notify",
    WorkerStages.notify_blocks,
    DISPATCHER,
    "worker",
    _limits(timedelta(minutes=30), THREE_TRIES, heartbeat=timedelta(minutes=1)),
    does="marks the originating task input-required, notifies per block",
)
GATE = Stage(
    "awaiting-approval",
    WorkerStages.wait_for_block_resolution,
    DISPATCHER,
    "worker",
    _limits(
        GATE_CHECK_TIMEOUT,
        GATE_RETRY,
        schedule_to_close=GATE_TIMEOUT + timedelta(hours=1),
    ),
    holdable=False,
    does="checks the originating task file",
)
CLOSE = _agent_stage("close", AgentStages.close_build, TARGET_AGENT, 2)
SUMMARY = Stage(
    "summary",
    WorkerStages.summarize_workflow,
    DISPATCHER,
    "worker",
    _limits(LOCAL_STAGE_TIMEOUT, THREE_TRIES),
    holdable=False,
    does="writes the run's summary",
)
PIPELINE = (PREFAB, IMPLEMENT, AUDIT, TRIAGE, FIXES, NOTIFY, GATE, CLOSE, SUMMARY)
# The agent stages a `rerun` may go back to, in order: re-running audit or one before it is a
# new audit round.
RERUNNABLE = (PREFAB, IMPLEMENT, AUDIT, FIXES)

# BuildPlanWorkflow: every phase is this row, under its own name (`phase-<n>`), done by the
# phase's `agent_type`. Two attempts: a phase whose agent fell silent is dispatched once more.
PHASE = Stage(
    "phase",
    BuildPhaseActivities.execute_build_phase,
    TARGET_AGENT,
    "agent",
    _limits(
        timedelta(hours=24),
        RetryPolicy(maximum_attempts=2, non_retryable_error_types=[PHASE_FAILED]),
    ),
    with_note=note_field,
    metric="phase",
)

# What the worker's own bookkeeping activities say in the UI (they are not stages).
SETTINGS_DOES = "fixes this run's settings"
END_DOES = "closes open task files, notifies once"
