"""A test-only workflow: one run of the real `execute_build_phase` activity with chosen limits.

BuildPlanWorkflow gives each phase 24 hours and two attempts; the CLI tests need a phase that
times out in seconds and a result they can read back unchanged, so they start this instead.
Import-light like every workflow module (temporalio, standard library, models).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from models import BuildPhaseInput, BuildPhaseResult


@dataclass
class ProbeInput:
    phase: BuildPhaseInput
    start_to_close_seconds: float = 60.0
    max_attempts: int = 1
    # keep the activity open after a cancel request, until the agent learns of it
    wait_for_cancel: bool = False


@workflow.defn
class PhaseProbeWorkflow:
    @workflow.run
    async def run(self, probe: ProbeInput) -> BuildPhaseResult:
        return await workflow.execute_activity(
            "execute_build_phase",
            probe.phase,
            result_type=BuildPhaseResult,
            start_to_close_timeout=timedelta(seconds=probe.start_to_close_seconds),
            retry_policy=RetryPolicy(
                maximum_attempts=probe.max_attempts, non_retryable_error_types=["PhaseFailedError"]
            ),
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
            if probe.wait_for_cancel
            else ActivityCancellationType.TRY_CANCEL,
        )
