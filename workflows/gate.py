"""The block gate: notify the operator of the blocks, then park until a decision.

A helper over the run's state, as the stage runner: the pipeline calls `notify_and_wait` with the
blocks of the round. A decision comes by update (the operator's, or the worker's watcher
delivering one written into the originating task file), by the fallback check finding one in
that file, or as the 7 days of one wait pass. A `rerun` ends the wait too, sending the run back.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    import observability  # stdlib-only at import time; its metric calls are replay-safe here
    from models import Resolution
    from workflows import review
    from workflows.stage_failure import Rerun, StageFailed
    from workflows.stage_runner import StageRunner
    from workflows.stages import GATE, GATE_TIMEOUT, NOTIFY


async def notify_and_wait(
    runner: StageRunner, task_id: str, blocks: list[str], survivors: int
) -> Resolution:
    """Mark the originating task `input-required` and notify per block (from round 2 on, naming
    the round, and how many of the blocks are flags that survived the fixes), then wait."""
    state = runner.state
    state.status.blocks = blocks
    args: tuple[Any, ...] = (state.name, task_id, blocks)
    if state.audit_round > 1:
        context = state.round_label()
        if survivors:
            context += f"; {survivors} flag(s) survived {state.audit_round - 1} round(s) of fixes"
        args = (*args, state.audit_round, context)
    state.origin_path = await runner.run(NOTIFY, *args) or ""
    return await _wait(runner, task_id)


async def _wait(runner: StageRunner, task_id: str) -> Resolution:
    """Park until a decision, a rerun, or GATE_TIMEOUT. Both ways of deciding leave the same
    commands; only a wait at the round cap tells the fallback check to pass over a
    `changes-requested` file (a trailing argument)."""
    state = runner.state
    runner.set_stage(GATE.name)
    state.awaiting = True
    parked = workflow.now()
    args: list[Any] = [state.name, task_id, state.origin_path]
    if not review.rounds_left(state):
        args.append(False)
    options: dict[str, Any] = {**GATE.limits, **runner.on(GATE.agent, bounded=False)}
    poller = workflow.start_activity_method(
        GATE.activity, args=args, summary=runner.summary(GATE, GATE.name), **options
    )
    try:
        await workflow.wait_condition(
            lambda: state.decision is not None or state.rerun is not None or poller.done(),
            timeout=GATE_TIMEOUT,
            timeout_summary="no decision on the blocks within 7 days",
        )
    except TimeoutError:
        state.decision = Resolution(decision="timed_out", via="timer", at=runner.now())
    finally:
        state.awaiting = False
    if state.decision is None and state.rerun is None:
        try:
            found: dict[str, str] = poller.result()
        except ActivityError as err:
            raise StageFailed(GATE.name, err) from None
        state.decision = Resolution(
            decision=found["decision"],  # type: ignore[arg-type]
            via="task-file",
            by=found.get("by", ""),
            note=found.get("note", ""),
            at=runner.now(),
        )
    elif not poller.done():
        poller.cancel()
        with contextlib.suppress(ActivityError, asyncio.CancelledError):
            await poller
    runner.mark_done(GATE.name)
    if state.decision is None and state.rerun is not None:
        observability.record_block_wait(runner.since(parked), "rerun")
        raise Rerun(state.rerun)
    assert state.decision is not None
    observability.record_block_wait(runner.since(parked), state.decision.decision)
    state.status.resolution = state.decision
    return state.decision
