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
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    import observability  # stdlib-only at import time; its metric calls are replay-safe here
    import operator_view
    import workflows.review as review
    import workflows.versions as versions
    import workflows.waiting as waiting
    from models import DecisionInput, Resolution
    from workflows.run_state import RunState
    from workflows.stage_failure import Rerun, StageFailed
    from workflows.stage_runner import StageRunner
    from workflows.stages import GATE, GATE_LOCAL_CHECK, GATE_TIMEOUT, NOTIFY


def check_open(state: RunState) -> None:
    """`approve`, `reject` and `request_changes` need the gate open and undecided."""
    if not state.awaiting or state.decision is not None or state.rerun is not None:
        raise ValueError(f"no block is awaiting approval (stage: {state.status.stage})")


def decide(state: RunState, decision: str, given: DecisionInput | None) -> str:
    """The accepted decision at the gate, `via` the operator's update or the watcher."""
    # The validator refuses a second decision (two workers' watchers seeing one file write
    # both send it); should an interceptor ever suspend between a validator and its handler,
    # the second still fails here as a refusal instead of overwriting the first.
    if state.decision is not None:
        raise ApplicationError(
            f"the blocks are already {state.decision.decision} (via {state.decision.via})",
            type="AlreadyDecidedError",
            non_retryable=True,
        )
    given = given or DecisionInput()
    state.decision = Resolution(
        decision=decision,  # type: ignore[arg-type]
        via=given.via,
        by=given.by or ("operator" if given.via == "update" else ""),
        note=given.note,
        at=workflow.now().isoformat(),
    )
    return decision


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
    commands; only a wait at the round cap tells the file's check to pass over a
    `changes-requested` file (a trailing argument)."""
    state = runner.state
    runner.set_stage(GATE.name)
    state.awaiting = True
    parked = workflow.now()
    args: list[Any] = [state.name, task_id, state.origin_path]
    if not review.rounds_left(state):
        args.append(False)
    options: dict[str, Any] = {**GATE.limits, **runner.on(GATE.agent, bounded=False)}
    found: dict[str, Any] | None = None
    try:
        if versions.patched(versions.DECISION_WAITS):
            found = await _wait_checking(runner, args, options)
        else:
            found = await _wait_on_retries(runner, args, options)
    except TimeoutError:
        state.decision = Resolution(decision="timed_out", via="timer", at=runner.now())
    except ActivityError as err:  # the check of the file failed: so does the gate
        raise StageFailed(GATE.name, err) from None
    finally:
        state.awaiting = False
    if found is not None and state.decision is None and state.rerun is None:
        state.decision = Resolution(
            decision=found["decision"],
            via="task-file",
            by=found.get("by", ""),
            note=found.get("note", ""),
            at=runner.now(),
        )
    runner.mark_done(GATE.name)
    if state.decision is None and state.rerun is not None:
        observability.record_block_wait(runner.since(parked), "rerun")
        raise Rerun(state.rerun)
    assert state.decision is not None
    observability.record_block_wait(runner.since(parked), state.decision.decision)
    state.status.resolution = state.decision
    return state.decision


def _decided(runner: StageRunner) -> bool:
    return runner.state.decision is not None or runner.state.rerun is not None


async def _wait_checking(
    runner: StageRunner, args: list[Any], options: dict[str, Any]
) -> dict[str, Any] | None:
    """Since `decision-waits`: the workflow's own timers between checks of the file, each a
    short activity that returns, and DECISION_REMINDERS on the way (workflows/waiting.py).
    Since `fewer-events`, a local activity where the dispatcher is any worker of the run's
    queue (stages.GATE_LOCAL_CHECK)."""
    state, workflow_id = runner.state, workflow.info().workflow_id
    changes = review.rounds_left(state)

    # a local activity's options, where it runs as one
    local: dict[str, Any] | None = (
        dict(GATE_LOCAL_CHECK) if state.local_checks and not state.route.host else None
    )

    def check(number: int) -> workflow.ActivityHandle[dict[str, Any]]:
        given, summary = [*args[:3], changes, number], runner.summary(GATE, GATE.name)
        if local is not None:
            return workflow.start_local_activity_method(
                GATE.activity, args=given, summary=summary, **local
            )
        return workflow.start_activity_method(GATE.activity, args=given, summary=summary, **options)

    return await waiting.wait(
        runner,
        waiting.Wait(
            waits_for=f"a decision on {len(state.status.blocks)} block(s)"
            + (f" ({state.round_label()})" if state.audit_round > 1 else ""),
            limit=GATE_TIMEOUT,
            decided=lambda: _decided(runner),
            commands=[c for _, c in operator_view.gate_commands(workflow_id, changes)],
            timeout_summary="no decision on the blocks within 7 days",
            check=check,
            check_alone=local is not None,
        ),
    )


async def _wait_on_retries(
    runner: StageRunner, args: list[Any], options: dict[str, Any]
) -> dict[str, Any] | None:
    """Runs parked before `decision-waits`: one activity whose "not yet" is a benign failure
    that the server retries every BLOCK_POLL_SECONDS."""
    poller = workflow.start_activity_method(
        GATE.activity, args=args, summary=runner.summary(GATE, GATE.name), **options
    )
    try:
        await workflow.wait_condition(
            lambda: _decided(runner) or poller.done(),
            timeout=GATE_TIMEOUT,
            timeout_summary="no decision on the blocks within 7 days",
        )
    except TimeoutError:
        await _cancel(poller)
        raise
    if not _decided(runner):
        return poller.result()
    await _cancel(poller)
    return None


async def _cancel(handle: workflow.ActivityHandle[Any]) -> None:
    if not handle.done():
        handle.cancel()
        with contextlib.suppress(ActivityError, asyncio.CancelledError):
            await handle
