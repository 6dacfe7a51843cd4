"""What a program loads by being imported: the agent runner runs agents, never a workflow, so
it imports no workflow module and not the worker that registers them; complete_activity.py's
connection module and its check of `--usage` cost only the standard library."""

from __future__ import annotations

import sys

import pytest

from tests.helpers.checks import modules_imported_by

pytestmark = pytest.mark.unit


def test_agent_runner_loads_no_workflow_and_not_the_worker() -> None:
    loaded = modules_imported_by("agent_runner")
    assert {"agent_runner", "runner.service", "temporal_connect"} <= loaded  # the listing is real
    assert not {m for m in loaded if m.split(".")[0] in ("workflows", "worker")}


def test_temporal_connect_loads_only_the_standard_library() -> None:
    """complete_activity.py imports it to explain a failed connect; its SDK, converter and
    Vault client come in only when `connect` runs."""
    added = {m.split(".")[0] for m in modules_imported_by("temporal_connect")}
    assert "temporal_connect" in added  # the listing is real
    assert added <= {"temporal_connect", "exceptions"} | set(sys.stdlib_module_names)


def test_the_cli_checks_usage_without_pydantic() -> None:
    """Each agent completion imports the CLI: pydantic would cost it about 0.1 s (bench P2)."""
    loaded = modules_imported_by("complete_activity")
    assert {"complete_activity", "usage"} <= loaded  # the listing is real
    assert {m.split(".")[0] for m in loaded} <= {
        "complete_activity",
        "agent_calls",
        "usage",
        "program_exit",
        "exceptions",
    } | set(sys.stdlib_module_names)
