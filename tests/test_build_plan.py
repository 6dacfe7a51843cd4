"""BuildPlanWorkflow end to end: real dev server, real worker, agents using complete_activity.py."""

from __future__ import annotations

from temporalio.client import Client

from config import WorkerConfig
from harness.agents import succeed_all, worker_and_agent
from harness.env import running_worker, start_plan
from models import BuildPlanInput, BuildPlanResult, PhaseSpec
from tests.helpers.checks import failure_of, task_files_in
from tests.helpers.histories import save_history


def plan(*agents: str) -> BuildPlanInput:
    return BuildPlanInput(
        plan_name="demo-plan",
        phases=[
            PhaseSpec(
                number=i + 1,
                agent_type=a,
                description=f"phase {i + 1} for {a}",
                context_refs=[f"ref-{i}"],
            )
            for i, a in enumerate(agents)
        ],
    )


async def test_two_phases_succeed(client: Client, config: WorkerConfig) -> None:
    async with worker_and_agent(client, config, succeed_all) as agent:
        handle = await start_plan(client, config.task_queue, plan("dev", "claudebox"))
        result = await handle.result()
        await save_history(handle, "plan_two_phases")
    assert result == BuildPlanResult(status="complete", phases_run=2)
    assert [t["target_agent"] for t in agent.handled] == ["dev", "claudebox"]
    assert [t["payload"]["phase_number"] for t in agent.handled] == [1, 2]
    assert all(code == 0 for _, code, _ in agent.results)
    assert len(task_files_in(config.agent_task_dir)) == 2


async def test_failed_phase_fails_workflow(client: Client, config: WorkerConfig) -> None:
    def decide(task: dict) -> tuple[str, str]:
        if task["payload"]["phase_number"] == 2:
            return ("failed", "tests are red: 3 failures")
        return ("success", "ok")

    async with worker_and_agent(client, config, decide) as agent:
        handle = await start_plan(client, config.task_queue, plan("dev", "dev", "dev"))
        cause = await failure_of(handle)
        await save_history(handle, "plan_phase_failed")
    assert cause.type == "PhaseFailedError"
    assert cause.message == "Phase 2 failed: tests are red: 3 failures"
    # the third phase was never dispatched, and phase 2 was not retried
    assert len(agent.handled) == 2
    assert len(task_files_in(config.agent_task_dir)) == 2


async def test_zero_phases_complete_at_once(client: Client, config: WorkerConfig) -> None:
    async with running_worker(client, config):
        empty = BuildPlanInput(plan_name="empty", phases=[])
        result = await (await start_plan(client, config.task_queue, empty)).result()
    assert result == BuildPlanResult(status="complete", phases_run=0)


async def test_invalid_agent_type_fails_workflow(client: Client, config: WorkerConfig) -> None:
    async with running_worker(client, config):
        cause = await failure_of(await start_plan(client, config.task_queue, plan("../../etc")))
    assert "phases[0].agent_type" in cause.message
    assert not task_files_in(config.agent_task_dir)
