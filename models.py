"""Workflow inputs and results.

BuildPlanWorkflow uses dataclasses, BuildPipelineWorkflow pydantic models, as the original does;
both travel as plain JSON (`json/plain`), so operators can start workflows from the `temporal` CLI.
This module is imported by workflow code: standard library and pydantic only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# --- BuildPlanWorkflow ------------------------------------------------------------------------


@dataclass
class PhaseSpec:
    number: int
    agent_type: str
    description: str
    context_refs: list[str] = field(default_factory=list)


# The longest a failed stage or phase may wait for the operator's decision.
MAX_HOLD_SECONDS = 30 * 86400
# The most audit rounds a pipeline may be given.
MAX_AUDIT_ROUNDS_LIMIT = 10
# How long one wait at the block gate lasts before it ends by itself.
GATE_TIMEOUT_SECONDS = 7 * 86400
REMINDER_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_reminders(text: str, longest: float = MAX_HOLD_SECONDS) -> list[float]:
    """DECISION_REMINDERS (`4h,1d,3d,6d`): the seconds after a wait began at which to remind,
    increasing, none zero, none beyond `longest` (the longest wait there is). ValueError says
    what is wrong in one line."""
    seconds: list[float] = []
    for item in (part.strip() for part in text.split(",")):
        number, unit = item[:-1], item[-1:]
        if unit not in REMINDER_UNITS:
            raise ValueError(f"{item!r} needs a unit: s, m, h or d (as in 4h,1d)")
        try:
            value = float(number) * REMINDER_UNITS[unit]
        except ValueError:
            raise ValueError(f"{item!r} is not a number with a unit (as in 4h)") from None
        if not value > 0:
            raise ValueError(f"{item!r} must be more than 0")
        if value > longest:
            raise ValueError(f"{item!r} is beyond the longest wait ({longest / 86400:g}d)")
        if seconds and value <= seconds[-1]:
            raise ValueError(f"{item!r} must come later than the reminder before it")
        seconds.append(value)
    return seconds


@dataclass
class BuildPlanInput:
    plan_name: str
    phases: list[PhaseSpec]
    # Seconds a failed phase waits for the operator's retry/skip/abort; None = the worker's
    # FAILURE_HOLD, 0 = fail at once.
    failure_hold_seconds: float | None = None
    # The most its agents may spend, in US dollars; None = the worker's PIPELINE_BUDGET_USD.
    budget_usd: float | None = None


@dataclass
class BuildPhaseInput:
    plan_name: str
    phase_number: int
    agent_type: str
    description: str
    context_refs: list[str] = field(default_factory=list)
    workflow_id: str = ""
    operator_note: str = ""  # the operator's note of a retry, for the task file as data
    budget_remaining_usd: float | None = None  # set when the plan has a budget


@dataclass
class BuildPhaseResult:
    """What an agent's completion carries; also the result of every agent stage."""

    status: str  # "success" | "failed"
    output: str = ""


# What an agent completes a pipeline stage with, exactly as it sent it: any JSON, which the
# workflow reads leniently (workflows/stage_failure.py). The agent-stage activities declare it as
# their result so that calling them by method reference decodes nothing on the way.
AgentCompletion = Any


@dataclass
class BuildPlanResult:
    status: str
    phases_run: int
    # what the phases' agents reported they cost, when any did (StageUsage fields per phase)
    usage: dict[str, Any] | None = None


# --- BuildPipelineWorkflow --------------------------------------------------------------------

BUILD_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
# Agent names route task files; keep them to a plain identifier so they cannot smuggle text.
AGENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# Any printable text without whitespace or path separators.
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
# A path on one line: no control characters (they would break the agent's instruction).
PLAN_PATH_PATTERN = r"^[^\x00-\x1f\x7f]+$"

# The agents that do fixed stages, and the AGENT_HOSTS name of the host that holds the
# dispatcher's task files (the originating task the gate watches) and the summaries.
PREFAB_AGENT = "claudebox"
AUDIT_AGENT = "security-agent"
DISPATCHER = "dispatcher"

BuildName = Annotated[str, Field(min_length=1, max_length=100, pattern=BUILD_NAME_PATTERN)]


class BuildPipelineInput(BaseModel):
    build_name: BuildName
    plan_path: Annotated[str, Field(min_length=1, max_length=4096, pattern=PLAN_PATH_PATTERN)]
    task_id: Annotated[str, Field(min_length=1, max_length=200, pattern=TASK_ID_PATTERN)]
    target_agent: Annotated[str, Field(min_length=1, max_length=100, pattern=AGENT_PATTERN)]
    # Seconds a failed stage waits for the operator's retry/skip/abort; None = the worker's
    # FAILURE_HOLD, 0 = fail at once.
    failure_hold_seconds: Annotated[float, Field(ge=0, le=MAX_HOLD_SECONDS)] | None = None
    # Audits per pipeline, the first included (None = the worker's MAX_AUDIT_ROUNDS), and
    # whether applied flags are audited again (None = the worker's VERIFY_FIXES).
    max_audit_rounds: Annotated[int, Field(ge=1, le=MAX_AUDIT_ROUNDS_LIMIT)] | None = None
    verify_fixes: bool | None = None
    # When to remind of a decision that waits (`4h,1d`; None = the worker's DECISION_REMINDERS,
    # "" = none)
    decision_reminders: str | None = None
    # The most its agents may spend, in US dollars (None = the worker's PIPELINE_BUDGET_USD).
    budget_usd: Annotated[float, Field(gt=0)] | None = None

    @field_validator("decision_reminders")
    @classmethod
    def _reminders(cls, value: str | None) -> str | None:
        if value:
            parse_reminders(value)
        return value


class TriageOutput(BaseModel):
    blocks: list[str] = []
    flags: list[str] = []
    info: list[str] = []
    report_path: str = ""  # the audit's report.md that this triage came with


class BuildPipelineResult(BaseModel):
    status: str  # "complete" | "rejected" | "timed_out"
    workflow_id: str
    summary_path: str


Outcome = Literal[
    "success", "partial", "failed", "rejected", "timed_out", "cancelled", "over_budget"
]


class StageUsage(BaseModel):
    """What one stage's agents cost, summed over its attempts (retries, reruns, rounds).

    `unknown` counts the attempts that reported no usage: their cost is unknown, never zero."""

    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    turns: int = 0
    attempts: int = 0
    unknown: int = 0


class Resolution(BaseModel):
    """How the block gate was left: who decided, how, and their note."""

    decision: Literal["approved", "rejected", "timed_out", "changes-requested"]
    via: Literal["task-file", "update", "timer"]
    by: str = ""
    note: str = ""
    at: str = ""


RoundTrigger = Literal["first", "changes-requested", "verify-fixes", "rerun"]


class ReviewRound(BaseModel):
    """One audit round: what started it, who asked and why, and what its triage found."""

    round: int
    trigger: RoundTrigger
    by: str = ""
    note: str = ""
    stage: str = ""  # a rerun's stage
    blocks: list[str] = []
    flags: list[str] = []


class PipelineOutcome(BaseModel):
    """Fields of the summary beyond the original's, passed to summarize_workflow."""

    outcome: Outcome
    failed_stage: str = ""
    error: str = ""
    resolution: Resolution | None = None
    task_ids: dict[str, str] = {}
    skipped: list[str] = []
    audit_rounds: int = 1
    rounds: list[ReviewRound] = []
    usage: dict[str, StageUsage] = {}
    budget_usd: float | None = None


class PipelineStatus(BaseModel):
    """Answer of the `status` query."""

    workflow_id: str
    build_name: str
    stage: str
    stages_done: list[str]
    started_at: str
    updated_at: str
    blocks: list[str] = []
    flags: list[str] = []
    task_ids: dict[str, str] = {}
    stage_times: dict[str, str] = {}
    awaiting_approval: bool = False
    resolution: Resolution | None = None
    outcome: str = ""
    error: str = ""
    # The host the current stage runs on (AGENT_HOSTS) and the queue it waits in there; both
    # empty while it runs on any worker of TASK_QUEUE.
    host: str = ""
    host_queue: str = ""

    # while a failed stage is held for the operator (stage `awaiting-retry`)
    failed_stage: str = ""
    failed_error: str = ""
    skipped: list[str] = []
    # review loops: the audit round under way, the cap, and every round so far
    audit_round: int = 1
    max_audit_rounds: int = 0
    rounds: list[ReviewRound] = []
    # what the agents cost so far (known usage only), per stage, and the budget if any
    cost_usd: float = 0.0
    usage: dict[str, StageUsage] = {}
    budget_usd: float | None = None


class DecisionInput(BaseModel):
    """Optional argument of the operator's updates: approve, reject, retry, skip, abort.

    Accepts `{"note": ..., "by": ...}`, or a bare JSON string taken as the note (what
    `temporal workflow update execute --input '"ok"'` sends). `via` is "task-file" when the
    worker's watcher delivers a decision written into the originating task file, so the summary
    says where the decision was made.
    """

    model_config = ConfigDict(extra="forbid")
    note: Annotated[str, Field(max_length=2000)] = ""
    by: Annotated[str, Field(max_length=200)] = ""
    via: Literal["update", "task-file"] = "update"

    @model_validator(mode="before")
    @classmethod
    def _bare_note(cls, data: Any) -> Any:
        return {"note": data} if isinstance(data, str) else data


class BudgetInput(BaseModel):
    """The `raise_budget` update's argument: the new budget, above what was spent."""

    model_config = ConfigDict(extra="forbid")
    budget_usd: Annotated[float, Field(gt=0)]
    note: Annotated[str, Field(max_length=2000)] = ""
    by: Annotated[str, Field(max_length=200)] = ""


class RerunInput(BaseModel):
    """The `rerun` update's argument: the agent stage to run again from, and a note for it."""

    model_config = ConfigDict(extra="forbid")
    stage: Annotated[str, Field(min_length=1, max_length=40)]
    note: Annotated[str, Field(max_length=2000)] = ""
    by: Annotated[str, Field(max_length=200)] = ""


class Features:
    """Switches the worker sets once at start, before any workflow runs.

    `stage_search_attribute` is False when the server has no `BuildStage` search attribute;
    the pipeline then leaves it out instead of failing its workflow tasks. The
    `pipeline_settings` local activity hands it over as `PipelineSettings`; workflow code reads
    it only on the old branch of the `pipeline-settings` patch (workflows/versions.py), for runs
    started before their settings were recorded.
    """

    stage_search_attribute: bool = True


class PipelineSettings(BaseModel):
    """The worker's settings one pipeline runs by, fixed in its history when it starts.

    The pipeline reads them once through the `pipeline_settings` local activity, whose result
    is recorded: a replay, or a worker restarted with other settings, sees the values the run
    started with. Each field's default is the behaviour of a worker that predates it.
    """

    stage_search_attribute: bool = True
    # AGENT_HEARTBEAT_TIMEOUT: the heartbeat timeout of each agent stage; 0 is none.
    heartbeat_timeout_seconds: int = 0
    # AGENT_HOSTS (agent -> host): an agent's stages run on `host_queue(<queue>, host)`.
    agent_hosts: dict[str, str] = {}
    # HOST_WAIT_SECONDS: how long a stage may wait for its host's worker to take it.
    host_wait_seconds: float = 900.0
    # FAILURE_HOLD: how long a failed stage waits for the operator's decision; 0 is no hold.
    failure_hold_seconds: float = 0.0
    # MAX_AUDIT_ROUNDS and VERIFY_FIXES: the review loops' cap, and re-auditing applied flags.
    max_audit_rounds: int = 3
    verify_fixes: bool = False
    # DECISION_REMINDERS: seconds after a wait for a person began at which to remind them.
    decision_reminders: list[float] = []
    # PIPELINE_BUDGET_USD: what a pipeline's or plan's agents may spend; None is no limit.
    budget_usd: float | None = None


def host_queue(task_queue: str, host: str) -> str:
    """The activity-only queue of the workers on `host`: `<TASK_QUEUE>@<host>`.

    A host name never holds `@` (config.HOST_PATTERN), so the host is what follows the last `@`:
    `helm-build@alpha` is host alpha's queue of the `helm-build` fleet.
    """
    return f"{task_queue}@{host}"


TASK_ID_NAMESPACE = uuid.UUID("6f1c2a53-3d0e-4a8e-9a57-1b7c5e0d2f10")


def dispatch_task_id(workflow_id: str, run_id: str, stage: str, attempt: int) -> str:
    """Task-file id of one dispatch attempt: derived, so the workflow knows it without I/O.

    The worker's activity and the workflow's `status` query both compute it; an agent sees an
    ordinary UUID string, as the original's uuid4 ids.
    """
    return str(uuid.uuid5(TASK_ID_NAMESPACE, f"{workflow_id}\x00{run_id}\x00{stage}\x00{attempt}"))


RETRY_ID_SEPARATOR = "-dispatch-"


def retry_activity_id(stage: str, number: int) -> str:
    """Activity id of the operator's retry of a held stage: its `number`-th dispatch (2, 3...).

    First dispatches keep Temporal's own ids; the dispatch reads the number back from this id.
    """
    return f"{stage}{RETRY_ID_SEPARATOR}{number}"


def dispatch_number(stage: str, activity_id: str, attempt: int) -> int:
    """Which dispatch of `stage` an activity attempt is: 1 for the first, then counting on over
    Temporal's retries of one activity and the operator's retries of a held stage."""
    base = activity_id.removeprefix(f"{stage}{RETRY_ID_SEPARATOR}")
    return int(base) + attempt - 1 if base != activity_id and base.isdigit() else attempt
