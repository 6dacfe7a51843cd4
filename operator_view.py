"""What the Temporal UI and `temporal workflow metadata` show of a pipeline.

Each activity carries a one-line summary (`implement · dev · task 3f2a9c1b`); the workflow's
current details say where it is and, when it waits for the operator, the exact commands that
move it on. Pure functions of workflow state: the workflow calls them, tests call them directly.
Standard library only, as workflow code imports it.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

SEP = " · "
UPDATE_INPUT = """--input '{"note": "...", "by": "..."}'"""

Command = tuple[str, str]  # (what it does, the exact command)


def agent_summary(stage: str, agent: str, task_id: str) -> str:
    """`implement · dev · task 3f2a9c1b`: the stage, who works on it, its task file's id."""
    return SEP.join([stage, agent, f"task {task_id[:8]}"])


def worker_summary(stage: str, build_name: str, does: str) -> str:
    """`triage · demo-build · reads the audit's triage-output.yml`: a stage the worker runs
    itself, and what it does (its row's `does`)."""
    return SEP.join([stage, build_name, does or stage])


def update_command(workflow_id: str, name: str) -> str:
    """The `temporal` CLI command that sends update `name`; the address and namespace come
    from the operator's TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE (or --address)."""
    return (
        f"temporal workflow update execute --workflow-id {shlex.quote(workflow_id)} --name {name}"
    )


RERUN_INPUT = """--input '{"stage": "implement", "note": "..."}'"""


def gate_commands(workflow_id: str, changes: bool = True) -> list[Command]:
    """The gate's commands; `request_changes` only while audit rounds are left."""
    commands = [
        ("approve the blocks", update_command(workflow_id, "approve")),
        ("reject the build", update_command(workflow_id, "reject")),
    ]
    if changes:
        what = "have the blocks fixed, then audit again"
        commands.append((what, update_command(workflow_id, "request_changes")))
    rerun = f"{update_command(workflow_id, 'rerun')} {RERUN_INPUT}"
    commands.append(("run again from prefab, implement, audit or fixes", rerun))
    return commands


def budget_commands(workflow_id: str) -> list[Command]:
    """A run parked at its budget: raise it (above what was spent), or end it."""
    raise_it = update_command(workflow_id, "raise_budget")
    example = """--input '{"budget_usd": <new>, "note": "...", "by": "..."}'"""
    return [
        ("raise the budget", f"{raise_it} {example}"),
        ("take the failure path now", update_command(workflow_id, "abort")),
    ]


def hold_commands(workflow_id: str, skippable: bool) -> list[Command]:
    """A held stage's commands, retry, skip, abort; no skip for the stages the security gate
    rests on (audit, triage: their rows are not `skippable`)."""
    commands = [("run the stage again", update_command(workflow_id, "retry"))]
    if skippable:
        commands.append(("carry on as if it succeeded", update_command(workflow_id, "skip")))
    commands.append(("take the failure path now", update_command(workflow_id, "abort")))
    return commands


def task_file_glob(task_id: str) -> str:
    """Where an agent stage's file is, by name alone: its path holds a time the workflow
    does not know."""
    return f"$AGENT_TASK_DIR/*-{task_id[:8]}.yml"


def current_details(
    *,
    build_name: str,
    stage: str,
    agent: str = "",
    task_id: str = "",
    task_file: str = "",
    error: str = "",
    facts: Sequence[str] = (),
    commands: Sequence[Command] = (),
) -> str:
    """The workflow's current details, in Temporal's markdown; `facts` are more list lines
    (the round, the blocks at the gate...)."""
    lines = [f"**{build_name}** · stage **{stage}**", ""]
    if agent:
        lines.append(f"- agent: `{agent}`")
    if task_id:
        where = task_file or task_file_glob(task_id)
        lines.append(f"- task: `{task_id}` (file `{where}`)")
    if error:
        lines.append(f"- error: {error}")
    lines += facts
    if commands:
        lines += ["", "Waiting for the operator:"]
        lines += [f"- {what}: `{command}`" for what, command in commands]
        lines += ["", f"Each update takes an optional `{UPDATE_INPUT}`."]
    return "\n".join(lines).rstrip("\n")
