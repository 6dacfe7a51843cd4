"""A test-only change of BuildPipelineWorkflow, of the kind the deploy check exists to catch.

Registered under the shipped name, it is the shipped pipeline with one more command after each
audit's triage, so before the block gate: a timer, with no `workflow.patched` guard. A run
parked at the gate recorded the gate's notification where this code now asks for a timer, so its
replay fails; a run that never reached triage replays as before. It lives here, never in
workflows/.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from models import BuildPipelineInput, BuildPipelineResult, TriageOutput
    from workflows.build_pipeline_workflow import BuildPipelineWorkflow


@workflow.defn(name="BuildPipelineWorkflow", failure_exception_types=[ValidationError])
class TimerBeforeGate(BuildPipelineWorkflow):
    @workflow.run
    async def run(self, build: BuildPipelineInput) -> BuildPipelineResult:
        return await super().run(build)

    async def _audit(self, build: BuildPipelineInput, *args: Any, **kw: Any) -> TriageOutput:
        triage = await super()._audit(build, *args, **kw)
        await workflow.sleep(timedelta(seconds=1))
        return triage
