"""The notifications of waits for a person: a failure hold's, and the reminders of any wait.

A held pipeline waits for `retry`, `skip` or `abort`; the message carries the exact commands,
so the operator can act from the notification alone. A reminder (DECISION_REMINDERS) repeats
what a wait at the gate or in a hold waits for, how long it has waited, how long is left, and
the commands.
"""

from __future__ import annotations

from temporalio import activity

import observability
from activities.notify import notify_once
from activities.triage import sanitize_finding
from config import WorkerConfig
from operator_view import hold_commands


def hold_message(
    workflow_id: str,
    build_name: str,
    stage: str,
    error: str,
    hold_seconds: float,
    skippable: bool = True,
    context: str = "",
) -> str:
    lines = [
        f"[HELD] {build_name}: the {stage} stage failed and waits for a decision "
        f"(up to {hold_seconds:g}s{'; ' + context if context else ''})",
        "",
        f"Error: {sanitize_finding(error, 1000)}",
        "",
        *(command for _, command in hold_commands(workflow_id, skippable)),
    ]
    if not skippable:
        lines.append(f"(skip is refused for {stage}: the security gate cannot be bypassed)")
    lines.append("Add --input '\"<note>\"' to pass a note; retry puts it in the new task file.")
    return "\n".join(lines)


class HoldActivities:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config

    @activity.defn(name="notify_hold")
    async def notify_hold(
        self,
        workflow_id: str,
        build_name: str,
        stage: str,
        error: str,
        hold_seconds: float,
        hold_number: int,
        skippable: bool = True,
        context: str = "",
    ) -> None:
        """One message per hold (`hold_number` counts a run's holds); `skippable` is False for
        the stages of the security gate (their rows in workflows/stages.py)."""
        message = hold_message(
            workflow_id, build_name, stage, error, hold_seconds, skippable, context
        )
        key = f"{activity.info().workflow_run_id}:hold:{hold_number}"
        await notify_once(self.config, message, key=key)
        observability.activity_logger(build=build_name).info("stage_held", stage=stage)


def duration(seconds: float) -> str:
    """`3d 4h`, `2h 5m`, `40s`: the two largest units."""
    left, parts = int(max(seconds, 0)), list[str]()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
    return " ".join(parts[:2])


def wait_message(headline: str, commands: list[str]) -> str:
    """A notification of a wait for a person: one line on what waits, then the commands."""
    return "\n".join([headline, "", *commands])


class WaitActivities:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config

    @activity.defn(name="notify_reminder")
    async def notify_reminder(
        self,
        build_name: str,
        waits_for: str,
        waited_seconds: float,
        left_seconds: float,
        commands: list[str],
        key: str,
    ) -> None:
        """One reminder, sent at most once (`key` names the wait and the reminder's number)."""
        headline = (
            f"[REMINDER] {build_name}: waits for {waits_for} since {duration(waited_seconds)}; "
            f"{duration(left_seconds)} left before it ends by itself"
        )
        await self._send(build_name, wait_message(headline, commands), key, "reminder_sent")

    @activity.defn(name="notify_budget")
    async def notify_budget(
        self, build_name: str, spent: float, budget: float, commands: list[str], key: str
    ) -> None:
        """One message when a run parks at its budget (`key` names the park)."""
        headline = (
            f"[BUDGET] {build_name}: its agents spent ${spent:.2f} of its ${budget:.2f} budget; "
            "no further agent stage is dispatched until the budget is raised"
        )
        await self._send(build_name, wait_message(headline, commands), key, "budget_reached")

    async def _send(self, build_name: str, message: str, key: str, event: str) -> None:
        await notify_once(self.config, message, key=f"{activity.info().workflow_run_id}:{key}")
        observability.activity_logger(build=build_name).info(event, key=key)
