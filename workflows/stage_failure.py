"""How a pipeline stage fails: `StageFailed` with a one-line reason, from an activity's error or
from an agent's result that is not a success.

Results come from complete_activity.py and from any other client (`temporal activity complete`),
so they are read leniently; only what says it is not a success fails the stage.
"""

from __future__ import annotations

import json
from typing import Any

from temporalio.exceptions import ActivityError, ApplicationError, TimeoutType
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

from exceptions import PHASE_FAILED, STAGE_TIMED_OUT, TRIAGE_MALFORMED
from models import BuildPhaseResult, RerunInput
from workflows.hosts import HOST_UNAVAILABLE, Route, unplaced

STAGE_FAILED = "StageFailedError"


class StageFailed(Exception):
    """A stage failed: carries the stage, an error type and a one-line reason.

    From an activity's error, `agent` and `heartbeat_seconds` name who fell silent when an agent
    stage's heartbeat timeout fired, and `where` the host a stage waited for; otherwise the
    type and reason are given. `what` names the stage in a reason ("the <stage> stage").
    """

    def __init__(
        self,
        stage: str,
        error: ActivityError | None = None,
        agent: str = "",
        heartbeat_seconds: int = 0,
        where: Route | None = None,
        *,
        what: str = "",
        error_type: str = STAGE_FAILED,
        reason: str = "",
    ) -> None:
        self.stage = stage
        self.error_type, self.reason = (
            _describe(
                what or f"the {stage} stage", error, agent, heartbeat_seconds, where or Route()
            )
            if error
            else (error_type, reason)
        )
        super().__init__(f"{stage}: {self.reason}")


class Rerun(Exception):
    """The operator sent the run back to an earlier agent stage (the `rerun` update)."""

    def __init__(self, request: RerunInput) -> None:
        self.request = request
        super().__init__(f"rerun from {request.stage}")


def read_agent_result(stage: str, raw: Any) -> BuildPhaseResult:
    """An agent stage's result, read leniently: complete_activity.py sends
    `{"status": "success", "output": ...}`, `temporal activity complete --result '"done"'` a bare
    string (the output text); other JSON is kept as text. A status other than success is the
    stage's failure."""
    if isinstance(raw, BuildPhaseResult):
        raw = {"status": raw.status, "output": raw.output}
    if isinstance(raw, str) or raw is None:
        return BuildPhaseResult(status="success", output=raw or "")
    if not isinstance(raw, dict):
        return BuildPhaseResult(status="success", output=_json_text(raw))
    status, output = raw.get("status", "success"), raw.get("output", "")
    text = output if isinstance(output, str) else _json_text(output)
    if status != "success":
        shown = status if isinstance(status, str) else _json_text(status)
        raise StageFailed(
            stage, reason=text or f"the {stage} stage was completed with status {shown[:100]!r}"
        )
    return BuildPhaseResult(status="success", output=text)


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


def _describe(
    what: str, error: ActivityError, agent: str, heartbeat_seconds: int, where: Route
) -> tuple[str, str]:
    missing = unplaced(error, where, what)
    if missing:
        return HOST_UNAVAILABLE, missing
    cause = error.cause
    if isinstance(cause, ApplicationError):
        kind = cause.type if cause.type in (PHASE_FAILED, TRIAGE_MALFORMED) else STAGE_FAILED
        return kind, cause.message
    if isinstance(cause, ActivityTimeoutError):
        if cause.type == TimeoutType.HEARTBEAT and agent:
            return STAGE_TIMED_OUT, (
                f"no heartbeat from the {agent} agent within {heartbeat_seconds} s"
            )
        kind = cause.type.name.lower().replace("_", "-") if cause.type else "timeout"
        return STAGE_TIMED_OUT, f"{what} timed out ({kind})"
    return STAGE_FAILED, str(cause or error)
