"""BuildPlanWorkflow's one activity: hand a phase to its agent as a task file."""

from __future__ import annotations

from temporalio import activity

from activities import instructions
from activities.dispatch import dispatch_to_agent
from config import WorkerConfig
from models import AgentCompletion, BuildPhaseInput


class BuildPhaseActivities:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config

    @activity.defn(name="execute_build_phase")
    async def execute_build_phase(self, phase: BuildPhaseInput) -> AgentCompletion:
        """Dispatch the phase; its agent's completion is read leniently by the workflow, so the
        usage it may carry reaches the plan (a declared result type would drop it)."""
        n = phase.phase_number
        budget = (
            {}
            if phase.budget_remaining_usd is None
            else {"budget_remaining_usd": phase.budget_remaining_usd}
        )
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
                "instruction": instructions.phase(n, phase.plan_name),
                **budget,
            },
            operator_note=phase.operator_note,
            log_event="phase_dispatched",
            agent=phase.agent_type,
            phase=n,
            plan=phase.plan_name,
        )
