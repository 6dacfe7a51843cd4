"""Replay every recorded history against today's workflow code: a change that breaks
determinism for runs already open fails here, not in production.

The histories under tests/histories/ were recorded from real runs against the dev server
(`RECORD_HISTORIES=1 pytest tests/test_pipeline.py ...`, see CONTRIBUTING.md); every file there
is replayed, so a new recording is covered without editing this module.
"""

from __future__ import annotations

import pytest

from tests.helpers.histories import RECORDED, replay, workflow_type

pytestmark = pytest.mark.unit


def test_both_workflows_have_recorded_histories() -> None:
    assert {workflow_type(p) for p in RECORDED} == {"BuildPipelineWorkflow", "BuildPlanWorkflow"}


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.stem)
async def test_replay(path) -> None:
    result = await replay(path)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
