"""The failure hold of BuildPipelineWorkflow: a failed stage parks for the operator's `retry`,
`skip` or `abort`, or until the hold ends.

A mixin: the workflow class inherits the updates (Temporal collects handlers from base classes)
and calls `_hold` from its stage runner, which acts on the decision.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.hold import HoldActivities
    from models import DecisionInput, PipelineStatus
    from workflows.operator_view import UNSKIPPABLE
    from workflows.stage_failure import StageFailed

NOTIFY_TIMEOUT = timedelta(minutes=2)
# Runs started before this patch send the hold's notification from any worker of the
# workflow's queue; later ones from the dispatcher's host, where every other notification is
# sent from (and where the Matrix settings are).
HOLD_NOTIFY_PATCH = "hold-notify-dispatcher"


class FailureHold:
    _status: PipelineStatus

    def _init_hold(self) -> None:
        self._hold_seconds = 0.0
        self._held: StageFailed | None = None
        self._choice: tuple[str, DecisionInput] | None = None
        self._holds = 0
        self._skipped: list[str] = []

    def _set_stage(self, stage: str) -> None:
        """The workflow's own (it sets the status and the BuildStage search attribute)."""
        raise NotImplementedError

    def _notifier_options(self) -> dict[str, Any]:
        """The workflow's own: the options that run a notification on the dispatcher's host."""
        raise NotImplementedError

    @workflow.update
    def retry(self, decision: DecisionInput | None = None) -> str:
        return self._choose("retry", decision)

    @workflow.update
    def skip(self, decision: DecisionInput | None = None) -> str:
        return self._choose("skip", decision)

    @workflow.update
    def abort(self, decision: DecisionInput | None = None) -> str:
        return self._choose("abort", decision)

    @skip.validator
    def _check_skippable(self, decision: DecisionInput | None = None) -> None:
        stage = self._held_stage()
        if stage in UNSKIPPABLE:
            raise ValueError(
                f"the {stage} stage cannot be skipped: the security gate "
                "cannot be bypassed (retry or abort)"
            )

    @retry.validator
    @abort.validator
    def _check_held(self, decision: DecisionInput | None = None) -> None:
        self._held_stage()

    def _held_stage(self) -> str:
        if self._held is None or self._choice is not None:
            stage = self._status.stage
            raise ValueError(f"no failed stage is awaiting retry, skip or abort (stage: {stage})")
        return self._held.stage

    def _choose(self, choice: str, given: DecisionInput | None) -> str:
        assert self._held is not None
        self._choice = (choice, given or DecisionInput())
        return f"{choice} {self._held.stage}"

    async def _hold(self, failure: StageFailed) -> tuple[str, DecisionInput]:
        """Park a failed stage until the operator decides or the hold ends; returns
        ("retry" | "skip", the operator's input), or raises the stage's failure."""
        self._held, self._choice = failure, None
        self._holds += 1
        self._status.failed_stage, self._status.failed_error = failure.stage, failure.reason
        self._set_stage("awaiting-retry")
        where = self._notifier_options() if workflow.patched(HOLD_NOTIFY_PATCH) else {}
        try:
            await workflow.execute_activity_method(
                HoldActivities.notify_hold,
                args=[
                    workflow.info().workflow_id,
                    self._status.build_name,
                    failure.stage,
                    failure.reason,
                    self._hold_seconds,
                    self._holds,
                ],
                start_to_close_timeout=NOTIFY_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=3),
                **where,
            )
        except ActivityError as err:  # best effort, as every notification
            if is_cancelled_exception(err):
                raise
        try:
            await workflow.wait_condition(
                lambda: self._choice is not None,
                timeout=timedelta(seconds=self._hold_seconds),
                timeout_summary=f"no decision on the failed {failure.stage} stage",
            )
        except TimeoutError:
            self._choice = ("expired", DecisionInput())
        self._held = None
        assert self._choice is not None
        choice, given = self._choice
        if choice == "expired":
            raise StageFailed(
                failure.stage,
                error_type=failure.error_type,
                reason=(
                    f"{failure.reason}; no decision came within the {self._hold_seconds:g}s hold"
                ),
            )
        if choice == "abort":
            note = f": {given.note}" if given.note else ""
            raise StageFailed(
                failure.stage,
                error_type=failure.error_type,
                reason=(f"{failure.reason}; aborted by {given.by or 'the operator'}{note}"),
            )
        self._status.failed_stage = self._status.failed_error = ""
        if choice == "skip":
            self._status.skipped = [*self._skipped, failure.stage]
        return choice, given
