"""What agents cost, and the budget that parks a run before it overspends: through `worker.py`
as a process on the dev server, agents that report usage with `complete_activity.py --usage`,
and the operator's `temporal` CLI for `raise_budget` and `abort`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from temporalio.client import Client

import observability
from config import WorkerConfig
from harness.agents import worker_and_agent
from harness.env import build_plan_input, make_config, start_plan
from harness.pipelines import (
    PipelineScript,
    dispatched,
    install_matrix_recorder,
    matrix_messages,
    running_pipeline,
    status_of,
    summary_of,
    update,
    wait_stage,
)
from harness.worker_process import WorkerProcess, worker_env
from tests.helpers.checks import failure_of
from tests.helpers.cli import temporal_cli
from tests.helpers.histories import save_history
from tests.helpers.otel import latest, otel_env
from tests.servers.otlp import OtlpReceiver, Point

PRICES = {
    "build_prefab": {"cost_usd": 0.1, "input_tokens": 1000, "output_tokens": 200, "turns": 3},
    "build_plan": {"cost_usd": 0.25, "input_tokens": 5000, "output_tokens": 900},
    "build_closeout": {"cost_usd": 0.05, "output_tokens": 40, "cache_read_tokens": 700},
}


def reporting(script: PipelineScript, prices: dict[str, dict[str, Any]] = PRICES) -> Any:
    """The script's answers, each with the usage its task type costs (none for the others)."""

    def decide(task: dict[str, Any]) -> tuple[str, ...] | None:
        answer = script.decide(task)
        price = prices.get(task["task_type"])
        return answer if answer is None or price is None else (*answer, json.dumps(price))

    return decide


def worker(config: WorkerConfig, tmp_path: Path, **env: str) -> WorkerProcess:
    return WorkerProcess(worker_env(config, **env), tmp_path / "logs")


async def test_usage_is_summed_per_stage_and_shown(
    client: Client, tmp_path: Path, address: str
) -> None:
    """Usage from the completions, summed per stage over its attempts (a failed implement
    costs too), in the status, the current details and the summary; a stage whose agent
    reported nothing is of unknown cost, never zero."""
    config = make_config(tmp_path, address)
    script = PipelineScript(fail_task_type="build_plan", fail_first=1)
    async with running_pipeline(
        client, config, reporting(script), worker(config, tmp_path), failure_hold_seconds=600
    ) as run:
        await wait_stage(run.handle, "awaiting-retry")
        held = await temporal_cli(["workflow", "metadata", "--workflow-id", run.handle.id], address)
        code, out = await update(address, run.handle.id, "retry")
        assert code == 0, out
        result = await asyncio.wait_for(run.handle.result(), 60)
        status = await status_of(run.handle)
    assert "- agents' reported cost so far: $0.35" in held  # prefab, and the failed implement
    assert round(status.cost_usd, 6) == 0.65  # 0.1 + 2 x 0.25 + 0.05
    implement = status.usage["implement"]
    assert (implement.attempts, implement.unknown, implement.input_tokens) == (2, 0, 10000)
    assert status.usage["audit"].unknown == status.usage["audit"].attempts == 1
    usage = summary_of(result.summary_path)["usage"]
    assert usage["cost_usd"] == 0.65
    assert usage["input_tokens"] == 11000 and usage["output_tokens"] == 2040
    assert usage["by_stage"]["audit"]["cost_usd"] == "unknown"
    assert usage["by_stage"]["close"]["cache_read_tokens"] == 700
    assert usage["by_stage"]["prefab"]["turns"] == 3


async def test_a_spent_budget_parks_until_raise_budget(
    client: Client, tmp_path: Path, address: str
) -> None:
    """The task files carry what is left; once the agents spent the budget the next agent stage
    is not dispatched: the run waits at `awaiting-budget` with one notification, a raise to no
    more than was spent is refused, a raise above it goes on."""
    config = make_config(tmp_path, address)
    record = install_matrix_recorder(config)
    script = PipelineScript()
    async with running_pipeline(
        client,
        config,
        reporting(script, {"build_prefab": {"cost_usd": 0.3}}),
        worker(config, tmp_path),
        budget_usd=0.25,
        failure_hold_seconds=600,
    ) as run:
        await wait_stage(run.handle, "awaiting-budget")
        parked = [t["task_type"] for t in dispatched(config)]
        details = await temporal_cli(
            ["workflow", "metadata", "--workflow-id", run.handle.id], address
        )
        low, said = await update(address, run.handle.id, "raise_budget", '{"budget_usd": 0.3}')
        code, out = await update(
            address, run.handle.id, "raise_budget", '{"budget_usd": 1, "by": "ana"}'
        )
        assert code == 0, out
        result = await asyncio.wait_for(run.handle.result(), 60)
        await save_history(run.handle, "pipeline_budget_raised_fewer_events")
    prefab, implement = dispatched(config)[:2]
    assert prefab["payload"]["budget_remaining_usd"] == 0.25
    assert parked == ["build_prefab"]
    assert "stage **awaiting-budget**" in details and "--name raise_budget" in details
    assert "$0.30 of the $0.25 budget" in details
    assert low != 0 and "not above what was spent ($0.30)" in said
    [notice] = [m["message"] for m in matrix_messages(record) if m["message"].startswith("[BUDG")]
    assert "spent $0.30 of its $0.25 budget" in notice and "--name raise_budget" in notice
    assert round(implement["payload"]["budget_remaining_usd"], 6) == 0.7
    assert result.status == "complete"
    summary = summary_of(result.summary_path)
    assert summary["budget_usd"] == 1 and summary["usage"]["cost_usd"] == 0.3


async def test_over_budget_without_a_hold_ends_at_once(
    client: Client, tmp_path: Path, address: str
) -> None:
    """PIPELINE_BUDGET_USD, no hold: the spent budget ends the pipeline through the failure
    path, `outcome: over_budget`, and says so."""
    config = make_config(tmp_path, address)
    record = install_matrix_recorder(config)
    script = PipelineScript()
    process = worker(config, tmp_path, PIPELINE_BUDGET_USD="0.1")
    async with running_pipeline(client, config, reporting(script), process) as run:
        cause = await failure_of(run.handle)
        await save_history(run.handle, "pipeline_over_budget_fewer_events")
    assert cause.type == "OverBudgetError"
    assert cause.message.startswith(
        "implement failed: its agents spent $0.10 of its $0.10 budget; no failure hold waits"
    )
    summary = summary_of(cause.message.split("(summary: ")[1].rstrip(")"))
    assert summary["outcome"] == "over_budget" and summary["failed_stage"] == "implement"
    assert [t["task_type"] for t in dispatched(config)] == ["build_prefab"]
    ended = [m["message"] for m in matrix_messages(record) if m["message"].startswith("[OVER")]
    assert len(ended) == 1 and "over_budget at implement" in ended[0]


async def test_abort_at_the_budget_ends_over_budget(
    client: Client, tmp_path: Path, address: str
) -> None:
    config = make_config(tmp_path, address)
    script = PipelineScript()
    async with running_pipeline(
        client,
        config,
        reporting(script),
        worker(config, tmp_path),
        budget_usd=0.05,
        failure_hold_seconds=600,
    ) as run:
        await wait_stage(run.handle, "awaiting-budget")
        retried, said = await update(address, run.handle.id, "retry")
        code, out = await update(
            address, run.handle.id, "abort", '{"note": "too dear", "by": "bo"}'
        )
        assert code == 0, out
        cause = await failure_of(run.handle)
    assert retried != 0 and "no failed stage is awaiting retry" in said
    assert cause.type == "OverBudgetError" and "aborted by bo: too dear" in cause.message


async def test_plan_phases_are_accounted_and_budgeted(
    client: Client, tmp_path: Path, address: str
) -> None:
    """A plan sums its phases' usage in its status and result; with a budget its phases' task
    files carry what is left, and a spent budget fails the plan before the next phase."""
    config = make_config(tmp_path, address)

    def decide(task: dict[str, Any]) -> tuple[str, str, str]:
        return ("success", "done", '{"cost_usd": 0.4, "output_tokens": 10}')

    async with worker_and_agent(client, config, decide, worker(config, tmp_path)):
        plan = build_plan_input("costed-plan", 2)
        result = await asyncio.wait_for(
            (await start_plan(client, config.task_queue, plan)).result(), 60
        )
        budgeted = build_plan_input("budgeted-plan", 3)
        budgeted.budget_usd = 0.5
        handle = await start_plan(client, config.task_queue, budgeted)
        cause = await failure_of(handle)
        status = await status_of(handle)
    assert result.usage is not None
    assert result.usage["phase-1"]["cost_usd"] == 0.4 and result.usage["phase-2"]["attempts"] == 1
    budgets = [t["payload"].get("budget_remaining_usd") for t in dispatched(config)][2:]
    assert [round(b, 6) for b in budgets] == [0.5, 0.1]
    assert cause.type == "OverBudgetError"
    assert cause.message.startswith("Phase 3 failed: its agents spent $0.80 of its $0.50 budget")
    assert round(status.cost_usd, 6) == 0.8 and status.outcome == "failed"


async def test_agent_cost_and_tokens_reach_the_metrics(
    client: Client, tmp_path: Path, address: str, receiver: OtlpReceiver
) -> None:
    """`agent.cost_usd` (a histogram in USD: its sum is the spend) and `agent.tokens` (by type),
    labelled by agent and stage, exported over OTLP by worker.py."""
    config = make_config(tmp_path, address)

    def decide(task: dict[str, Any]) -> tuple[str, str, str]:
        return ("success", "done", '{"cost_usd": 0.4, "input_tokens": 5, "output_tokens": 10}')

    process = WorkerProcess(otel_env(config, receiver), tmp_path / "logs")
    async with worker_and_agent(client, config, decide, process):
        plan = build_plan_input("metered-plan", 2)
        await asyncio.wait_for((await start_plan(client, config.task_queue, plan)).result(), 60)

    def flushed() -> list[Point]:
        points = receiver.points()
        cost = latest(points, observability.AGENT_COST, agent="dev", stage="phase")
        return points if cost is not None and cost.count == 2 else []

    points = await receiver.wait(flushed)
    cost = latest(points, observability.AGENT_COST, agent="dev", stage="phase")
    assert cost is not None and cost.unit == "USD" and round(cost.value, 6) == 0.8
    output = latest(points, observability.AGENT_TOKENS, agent="dev", stage="phase", type="output")
    assert output is not None and output.value == 20
    assert latest(points, observability.AGENT_TOKENS, type="cache_read") is None
