"""The one wait for a person, shared by the block gate and the failure hold: until a decision,
with reminders, and (at the gate) the checks of the originating task file.

A wait is durable timers in the workflow: the next reminder (DECISION_REMINDERS, times after
the wait began), the next check of the file, and the wait's own end, whichever comes first (and,
since the fewer-events patch, none while a local check of the file runs: it returns first). A
worker restart neither loses nor repeats a reminder: its timer fired once, and its notification
is sent at most once per key. The current details say when the next check and the next reminder
are due, so the UI shows a wait, not an activity retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.hold import WaitActivities
    from workflows.stages import THREE_TRIES

if TYPE_CHECKING:
    from workflows.stage_runner import StageRunner

REMINDER_TIMEOUT = timedelta(minutes=2)
Check = Callable[[int], "workflow.ActivityHandle[dict[str, Any]]"]


@dataclass
class Wait:
    """What one wait waits for, for how long, and how it learns of a decision."""

    waits_for: str  # for the reminders: "a decision on 2 block(s)"
    limit: timedelta
    decided: Callable[[], bool]
    commands: list[str]
    timeout_summary: str
    # The gate's check of its file: starts the n-th check (1, 2...), whose result is the
    # decision found, or when to check again ({"next_check_seconds": ...}).
    check: Check | None = None
    # A check that is a local activity returns within minutes whatever happens, so no timer
    # races it; one on a host's queue may wait as long as that host is down, so the wait's
    # timers run beside it.
    check_alone: bool = False


async def wait(runner: StageRunner, what: Wait) -> dict[str, Any] | None:
    """Wait until `what.decided()` (None), a check finds a decision in the file (returns it), or
    the limit (TimeoutError). Reminders go out on the way."""
    state = runner.state
    state.waits += 1
    started = workflow.now()
    deadline = started + what.limit
    reminders = [
        started + timedelta(seconds=s) for s in state.reminders if s < what.limit.total_seconds()
    ]
    sent, checks = 0, 0
    pending: workflow.ActivityHandle[dict[str, Any]] | None = None
    next_check: datetime | None = started if what.check else None
    try:
        while True:
            if what.check is not None and pending is None and next_check is not None:
                if next_check <= workflow.now():
                    checks += 1
                    pending, next_check = what.check(checks), None
            reminder = reminders[sent] if sent < len(reminders) else None
            _show(runner, next_check, reminder, sent, len(reminders))
            if pending is not None and what.check_alone:
                # a timer raced with it would cost two events a check; the deadline and the
                # reminders are looked at once it returns
                await workflow.wait_condition(pending.done)
            else:
                await _until(what, pending, next_check, reminder, deadline, sent, len(reminders))
            if what.decided():
                return None
            if pending is not None and pending.done():
                found = pending.result()  # a check that failed fails the wait's stage
                pending = None
                if "decision" in found:
                    return found
                next_check = workflow.now() + timedelta(seconds=found["next_check_seconds"])
                continue
            if workflow.now() >= deadline:
                raise TimeoutError
            if reminder is not None and reminder <= workflow.now():
                sent += 1
                await _remind(runner, what, started, deadline, sent)
    finally:
        state.wait_facts = []
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(ActivityError, asyncio.CancelledError):
                await pending


async def _until(
    what: Wait,
    pending: workflow.ActivityHandle[dict[str, Any]] | None,
    next_check: datetime | None,
    reminder: datetime | None,
    deadline: datetime,
    sent: int,
    reminders: int,
) -> None:
    """A decision, the pending check's end, or the earliest of the next check, the next
    reminder and the deadline: one timer."""
    wake = min(t for t in (next_check, reminder, deadline) if t is not None)
    seconds = (wake - workflow.now()).total_seconds()
    with contextlib.suppress(TimeoutError):
        await workflow.wait_condition(
            lambda: what.decided() or (pending is not None and pending.done()),
            timeout=timedelta(seconds=max(seconds, 0.001)),
            timeout_summary=_why(wake, next_check, reminder, what, sent, reminders),
        )


async def _remind(
    runner: StageRunner, what: Wait, started: datetime, deadline: datetime, number: int
) -> None:
    """One reminder, from the dispatcher's host, as every notification; best effort."""
    now = workflow.now()
    try:
        await workflow.execute_activity_method(
            WaitActivities.notify_reminder,
            args=[
                runner.state.name,
                what.waits_for,
                (now - started).total_seconds(),
                (deadline - now).total_seconds(),
                what.commands,
                f"wait-{runner.state.waits}:reminder-{number}",
            ],
            start_to_close_timeout=REMINDER_TIMEOUT,
            retry_policy=THREE_TRIES,
            summary=f"reminder {number} · {runner.state.name} · waits for {what.waits_for}",
            **runner.notifier_options(),
        )
    except ActivityError as err:
        if is_cancelled_exception(err):
            raise


def _show(
    runner: StageRunner,
    next_check: datetime | None,
    reminder: datetime | None,
    sent: int,
    reminders: int,
) -> None:
    """The wait's own lines in the current details: when the next check and reminder are."""
    facts = []
    if next_check is not None:
        facts.append(f"- next check of the task file: {next_check.isoformat()}")
    if reminder is not None:
        facts.append(f"- next reminder ({sent + 1} of {reminders}): {reminder.isoformat()}")
    if facts != runner.state.wait_facts:
        runner.state.wait_facts = facts
        workflow.set_current_details(runner.details(runner.state.status.stage))


def _why(
    wake: datetime,
    next_check: datetime | None,
    reminder: datetime | None,
    what: Wait,
    sent: int,
    reminders: int,
) -> str:
    """The timer's summary in the UI: what it waits for."""
    if wake == reminder:
        return f"reminder {sent + 1} of {reminders}"
    if wake == next_check:
        return "the next check of the originating task file"
    return what.timeout_summary
