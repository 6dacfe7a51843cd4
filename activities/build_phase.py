"""BuildPlanWorkflow's one activity: hand a phase to its agent as a task file."""

from __future__ import annotations

from temporalio import activity

from activities import task_files
from activities.dispatch import dispatch_to_agent
from config import WorkerConfig
from models import BuildPhaseInput, BuildPhaseResult

PHASE_DONE = "'phase-complete'"
PHASE_FAILED_MSG = "'<reason>'"


class BuildPhaseActivities:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config

    @activity.defn(name="execute_build_phase")
    async def execute_build_phase(self, phase: BuildPhaseInput) -> BuildPhaseResult:
        n = phase.phase_number
        await dispatch_to_agent(
            self.config.agent_task_dir,
            stage=f"phase-{n}",
            target_agent=phase.agent_type,
            task_type="build_phase",
            summary=f"Build phase {n}: {phase.description}",
            history_note=f"Phase {n} dispatched by BuildPlanWorkflow",
            payload={
                "description": phase.description,
                "plan_name": phase.plan_name,
                "phase_number": n,
                "context_refs": list(phase.context_refs),
                "workflow_id": phase.workflow_id,
                "instruction": (
                    f"Carry out phase {n} of build plan '{phase.plan_name}' as described in "
                    "`description`. When it is done, call:\n"
                    f"{task_files.completion_command('success', PHASE_DONE)}\n"
                    "If it cannot be done, call:\n"
                    f"{task_files.completion_command('failed', PHASE_FAILED_MSG)}"
                ),
            },
            log_event="phase_dispatched",
            agent=phase.agent_type,
            phase=n,
            plan=phase.plan_name,
        )
