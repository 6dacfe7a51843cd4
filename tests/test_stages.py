"""The stage table (workflows/stages.py) against the README's, and each row against its
activity's signature: the table is data, so these hold it to what the pipeline documents."""

from __future__ import annotations

import dataclasses
import inspect
import re
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity

from workflows import stages
from workflows.stages import GATE, GATE_TIMEOUT, PHASE, PIPELINE, TARGET_AGENT, TRIAGE, Stage

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_rows() -> list[list[str]]:
    text = README.read_text()
    table = text[text.index("| # | stage (`BuildStage`)") :].split("\n\n")[0]
    return [
        [cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]
    ]


def duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    return f"{seconds // 3600} h" if seconds % 3600 == 0 else f"{seconds // 60} min"


def bound(row: Stage) -> str:
    """The README's words for a row's limits."""
    if row is GATE:
        return f"{GATE_TIMEOUT.days} days"
    limits, retry, timeout = (
        row.limits,
        row.limits["retry_policy"],
        row.limits["start_to_close_timeout"],
    )
    assert retry is not None and timeout is not None, row.name
    tries = retry.maximum_attempts
    text = duration(timeout)
    if tries > 1:
        text += f" per try, {tries} tries"
        waits, wait = timedelta(), retry.initial_interval
        for _ in range(tries - 1):
            waits += min(wait, retry.maximum_interval or wait)
            wait *= retry.backoff_coefficient
        if waits >= timedelta(minutes=1):
            text += f" over ≈{duration(waits)}"
    heartbeat = limits.get("heartbeat_timeout")
    if heartbeat is not None:
        text += f", heartbeat {duration(heartbeat)}"
    return text


def when_held(row: Stage) -> str:
    if not row.holdable:
        return "not held"
    return "retry, skip" if row.skippable else "retry"


def test_the_readme_table_is_the_stage_table() -> None:
    rows = readme_rows()
    assert [r[1] for r in rows] == [f"`{row.name}`" for row in PIPELINE]
    for cells, row in zip(rows, PIPELINE, strict=True):
        name = activity._Definition.must_from_callable(row.activity).name
        assert cells[2].startswith(f"`{name}`"), cells
        if row.kind == "agent":
            who = "`target_agent`" if row.agent == TARGET_AGENT else f"agent `{row.agent}`"
            assert who in cells[2], cells
        assert cells[4] == bound(row), cells
        assert cells[5] == when_held(row), cells


def test_the_security_gate_cannot_be_skipped() -> None:
    assert [row.name for row in PIPELINE if row.holdable and not row.skippable] == [
        "audit",
        "triage",
    ]


@pytest.mark.parametrize("row", [*PIPELINE, PHASE], ids=lambda r: r.name)
def test_a_retrys_note_reaches_the_agent_as_its_activity_takes_it(row: Stage) -> None:
    """Agent rows carry the note as their activity takes it: its `operator_note` parameter (in
    place, whatever follows), or the field of its one input; worker rows take none."""
    params = list(inspect.signature(row.activity).parameters)[1:]  # after self
    if row.kind == "worker":
        assert row.with_note is None and "operator_note" not in params
    elif row is PHASE:
        assert row.with_note is stages.note_field and len(params) == 1
        hints = inspect.get_annotations(row.activity, eval_str=True)
        fields = {f.name for f in dataclasses.fields(hints[params[0]])}
        assert "operator_note" in fields
    else:
        assert row.with_note is not None
        at = params.index("operator_note")
        first = tuple(f"arg{i}" for i in range(at))  # a first dispatch stops before the note
        assert row.with_note(first, "n") == (*first, "n")
        later = (*first, "old", *(f"more{i}" for i in range(len(params) - at - 1)))
        noted = row.with_note(later, "n")
        assert noted[at] == "n" and noted[:at] == first and noted[at + 1 :] == later[at + 1 :]


def test_summary_phases_are_the_agent_stages_and_triage() -> None:
    """The summary's `phases_completed` has always listed the agent stages and triage."""
    listed = [row.name for row in PIPELINE if row.in_summary]
    assert listed == [row.name for row in PIPELINE if row.kind == "agent" or row is TRIAGE]
    assert {"prefab", "implement", "audit", "triage", "fixes", "close"} <= set(listed)


def test_stage_names_are_unique_and_bounded() -> None:
    assert len({row.name for row in PIPELINE}) == len(PIPELINE)
    for row in PIPELINE:
        assert re.fullmatch(r"[a-z-]+", row.name)
        assert row.limits.get("start_to_close_timeout"), row.name
