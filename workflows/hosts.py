"""Which host a stage runs on: AGENT_HOSTS as a pipeline's settings recorded it.

Both workflows route by these functions, so a stage's files are written and read on the host of
the agent that reads or writes them. Nothing here reads the worker's environment: the mapping
comes from `PipelineSettings`, fixed in the history when the run started. Workflow modules import
this one with their other pass-through imports (it is deterministic and holds no state).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio.exceptions import ActivityError, TimeoutType
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

from models import PipelineSettings, host_queue

HOST_UNAVAILABLE = "HostUnavailableError"


@dataclass(frozen=True)
class Route:
    """Where one activity runs: `host` "" means any worker of the workflow's own queue."""

    host: str = ""
    queue: str = ""
    wait: timedelta | None = None
    options: dict[str, Any] = field(default_factory=dict)


def route(
    settings: PipelineSettings, task_queue: str, agent: str, *, bounded: bool = True
) -> Route:
    """The route of an activity done for `agent`: its host's, or any worker's if unmapped."""
    return on_host(settings, task_queue, settings.agent_hosts.get(agent, ""), bounded=bounded)


def on_host(
    settings: PipelineSettings, task_queue: str, host: str, *, bounded: bool = True
) -> Route:
    """The route to `host`'s queue, with the options that send an activity there.

    `bounded` adds HOST_WAIT_SECONDS as the activity's schedule-to-start timeout: a host whose
    worker never polls fails the stage instead of holding it for its whole (hours long) bound.
    No host means no options at all, so the commands are exactly those of a single-host worker.
    """
    if not host:
        return Route()
    queue = host_queue(task_queue, host)
    wait = timedelta(seconds=settings.host_wait_seconds) if bounded else None
    options: dict[str, Any] = {"task_queue": queue}
    if wait is not None:
        options["schedule_to_start_timeout"] = wait
    return Route(host=host, queue=queue, wait=wait, options=options)


def unplaced(error: ActivityError, where: Route, what: str) -> str:
    """The one-line reason when `error` says no worker of `where`'s host took the activity;
    "" for any other failure."""
    cause = error.cause
    if not (
        where.host
        and where.wait is not None
        and isinstance(cause, ActivityTimeoutError)
        and cause.type == TimeoutType.SCHEDULE_TO_START
    ):
        return ""
    return (
        f"no worker on host {where.host!r} took {what} within "
        f"{where.wait.total_seconds():g} s (task queue {where.queue}): start worker.py "
        f"there with WORKER_HOST={where.host}"
    )
