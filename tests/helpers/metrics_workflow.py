"""A tiny workflow and activity that record our metrics the way the pipeline does.

Its own module so the workflow sandbox imports it as it imports production workflows: temporalio,
the standard library, and `observability` passed through.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import observability


@activity.defn(name="record_from_activity")
async def record_from_activity(task_type: str) -> None:
    observability.count_dispatch(task_type)
    observability.record_stage("audit", 2.5, "failed")


@workflow.defn(name="MetricsWorkflow")
class MetricsWorkflow:
    """Records before and after an activity: with no workflow cache, the second activation replays
    the first, and a replay must not record again."""

    @workflow.run
    async def run(self) -> None:
        observability.record_block_wait(42.0, "approved")
        await workflow.execute_activity(
            record_from_activity, "security_audit", start_to_close_timeout=timedelta(seconds=30)
        )
        observability.record_stage("close", 7.0, "success")
