"""One run's state: the one object a workflow owns and its stage runner and hold act on.

Both workflows keep everything a run knows here, so following a value means reading one class;
the `status` query answers with `status`. Standard library and the project's models only, as
workflow code imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from models import (
    BuildPipelineInput,
    BuildPlanInput,
    DecisionInput,
    PipelineSettings,
    PipelineStatus,
    RerunInput,
    Resolution,
    ReviewRound,
    TriageOutput,
    parse_reminders,
)
from workflows.hosts import Route
from workflows.stage_failure import StageFailed


@dataclass
class RunState:
    name: str  # the build's or the plan's name
    target_agent: str  # who does TARGET_AGENT stages: the input's agent, or the phase's
    status: PipelineStatus
    # the worker's settings this run started with (recorded in its history), and its hold
    settings: PipelineSettings = field(default_factory=PipelineSettings)
    hold_seconds: float = 0.0
    hold_patch: str = ""  # a patch a hold needs first, for workflows that gained holds late
    # Runs without this patch's marker took a cancelled stage as a failed one ("": a cancelled
    # stage always cancels the run)
    cancel_patch: str = ""
    # Which stages upsert BuildStage (StageRunner.set_stage): "every" one (pipelines started
    # before fewer-events); "waits": a wait for a person, the stage that ends it, and the run's
    # end, which is what the operator's queries ask for; "held": every stage from the first
    # hold on (plans: one that never holds writes none)
    upserts: Literal["every", "waits", "held"] = "every"
    shown_stage: str = ""  # the BuildStage value last upserted
    # the gate checks its file by a local activity where the dispatcher has no host of its own
    # (fewer-events)
    local_checks: bool = False
    # where the current stage runs, and every agent host the run dispatched to (the failure
    # path closes the run's task files on each)
    route: Route = field(default_factory=Route)
    hosts_used: set[str] = field(default_factory=set)
    agents: dict[str, str] = field(default_factory=dict)  # agent stage -> who does it
    phases: list[str] = field(default_factory=list)  # the summary's phases_completed, once each
    # dispatches so far per stage (retries and reruns: a new task file each), and the
    # arguments of each stage's latest (a rerun dispatches it again with them)
    dispatches: dict[str, int] = field(default_factory=dict)
    last_args: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    # review loops: the cap, verify-fixes, the rounds so far, the latest triage, the flags fixed
    max_rounds: int = 1
    verify_fixes: bool = False
    rounds: list[ReviewRound] = field(default_factory=list)
    triage: TriageOutput = field(default_factory=TriageOutput)
    flags_fixed: int = 0
    # an operator's `rerun` at the gate or in a hold, until the run goes back to its stage
    rerun: RerunInput | None = None
    # waits for a person: when to remind (seconds after a wait began), how many waits so far
    # (a reminder's key), and the current wait's lines in the current details
    reminders: list[float] = field(default_factory=list)
    waits: int = 0
    wait_facts: list[str] = field(default_factory=list)
    # the budget (status.budget_usd): parked at it, the operator's choice there, parks so far
    budget_parked: bool = False
    budget_choice: tuple[str, DecisionInput] | None = None
    budget_parks: int = 0
    # the gate
    decision: Resolution | None = None
    awaiting: bool = False
    origin_task_id: str = ""  # the originating task's id (the input's `task_id`)
    origin_path: str = ""  # the originating task file, once the notify stage found it
    # the failure hold
    held: StageFailed | None = None
    held_skippable: bool = True
    choice: tuple[str, DecisionInput] | None = None
    holds: int = 0
    skipped: list[str] = field(default_factory=list)

    def settle(self, given: BuildPipelineInput | BuildPlanInput) -> None:
        """What this run goes by: the recorded settings, each overridden by the input's field
        where the input has one and it is set."""
        settings = self.settings

        def chosen(name: str, default: Any) -> Any:
            value = getattr(given, name, None)
            return default if value is None else value

        self.hold_seconds = chosen("failure_hold_seconds", settings.failure_hold_seconds)
        self.max_rounds = chosen("max_audit_rounds", settings.max_audit_rounds)
        self.verify_fixes = chosen("verify_fixes", settings.verify_fixes)
        reminders = chosen("decision_reminders", None)
        self.reminders = (
            settings.decision_reminders
            if reminders is None
            else parse_reminders(reminders)
            if reminders
            else []
        )
        self.status.max_audit_rounds = self.max_rounds
        self.status.budget_usd = chosen("budget_usd", settings.budget_usd)

    @property
    def audit_round(self) -> int:
        return max(len(self.rounds), 1)

    def round_label(self) -> str:
        return f"audit round {self.audit_round} of {self.max_rounds}"
