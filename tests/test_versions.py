"""The version registry (workflows/versions.py) against the code and the recorded histories.

Every `workflow.patched` id goes through the registry, and each one's two branches are proven
by replay: some recorded history asks for it and finds its marker (the new branch), and some
asks for it and finds none (the old branch, a run started before the patch).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest

from tests.helpers.histories import RECORDED, patch_markers, replay, workflow_type
from workflows import versions

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


def test_workflow_code_asks_only_the_registry() -> None:
    asked = set()
    for path in sorted((ROOT / "workflows").glob("*.py")):
        text = path.read_text()
        if path.name != "versions.py":
            assert "workflow.patched(" not in text, f"{path.name} bypasses workflows/versions.py"
            assert "deprecate_patch(" not in text, path.name
        asked |= set(re.findall(r"versions\.([A-Z_]+)\b", text))
    ids = {getattr(versions, name) for name in asked if name != "PATCHES"}
    assert ids == set(versions.PATCHES), "a registered patch that no workflow asks for, or back"


def test_every_patch_says_when_and_why() -> None:
    for patch in versions.PATCHES.values():
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", patch.added), patch.id
        assert set(patch.workflows) <= {"BuildPipelineWorkflow", "BuildPlanWorkflow"}, patch.id
        assert patch.old_branch and patch.deprecate_when, patch.id


def test_a_patch_implies_only_earlier_patches_of_its_workflows() -> None:
    order = list(versions.PATCHES)
    for patch in versions.PATCHES.values():
        for earlier in patch.implies:
            assert order.index(earlier) < order.index(patch.id), (patch.id, earlier)
            assert set(versions.PATCHES[earlier].workflows) & set(patch.workflows), earlier


def test_an_unlisted_patch_id_is_refused() -> None:
    with pytest.raises(KeyError):
        versions.patched("not-a-patch")


async def test_every_patch_replays_with_and_without_its_marker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Replays each recorded history with `versions.patched` watched: for every id, one replay
    took the new branch (True: the history holds the marker) and one the old (False: none)."""
    answers: dict[str, dict[bool, list[str]]] = defaultdict(lambda: defaultdict(list))
    current = [""]
    ask = versions.patched

    def watched(patch_id: str) -> bool:
        answer = ask(patch_id)
        answers[patch_id][answer].append(current[0])
        return answer

    monkeypatch.setattr(versions, "patched", watched)
    for path in RECORDED:
        current[0] = path.stem
        result = await replay(path, sandboxed=False)  # the sandbox would hide `watched`
        assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
    for patch in versions.PATCHES.values():
        with_marker, without = answers[patch.id][True], answers[patch.id][False]
        assert with_marker, f"no recorded history takes {patch.id}'s new branch"
        assert bool(without) == patch.reached_without_marker, (
            f"{patch.id}: recorded histories that take its old branch: {without}"
        )
        implying = {later.id for later in versions.IMPLIED_BY[patch.id]}
        for stem in with_marker:
            path = next(p for p in RECORDED if p.stem == stem)
            assert patch.id in patch_markers(path) or implying & set(patch_markers(path)), stem
            assert workflow_type(path) in patch.workflows, stem
        for stem in without:
            path = next(p for p in RECORDED if p.stem == stem)
            assert not {patch.id, *implying} & set(patch_markers(path)), stem
