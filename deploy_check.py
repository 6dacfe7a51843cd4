"""The deploy check (`worker.py --check-open-runs`): would this checkout's workflow code replay
every run that is open on the server today?

It lists the open `BuildPipelineWorkflow` and `BuildPlanWorkflow` runs of the namespace a page
at a time, fetches their histories a few at a time, and replays each with a `Replayer` set up
as `worker.build_worker` sets up its `Worker`: the client's data converter and Core runtime, the
worker's interceptors (the client's that also intercept workers, then `worker_options`'), and
its workflow runner (the SDK's sandbox unless `worker_options` names another). A run whose
fetched history ends in a close event closed while it was checked: it is skipped and counted.

stdout is the report: one line per run that would break, then
`N open runs replay on this code, M would break`. Nothing is written to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Interceptor, Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

import observability
from config import WorkerConfig
from exceptions import ConfigError, TemporalUnreachableError
from temporal_connect import connect

OPEN_RUNS = (
    "ExecutionStatus='Running' AND WorkflowType IN ('BuildPipelineWorkflow','BuildPlanWorkflow')"
)
PAGE_SIZE = 100  # runs listed per visibility page
FETCH_AT_ONCE = 4  # histories fetched concurrently: a few, so a busy server barely notices
PROGRESS_FROM = 20  # fewer open runs than this are checked in well under a second
EXIT_BREAKS = 1  # some open run would break on this code
CLOSE_EVENTS = frozenset(
    {
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    }
)
_CORE_MESSAGE = re.compile(r'\bmessage: "((?:[^"\\]|\\.)*)"')
# Options of the worker's that shape how workflow code runs, and so how it replays.
_REPLAY_OPTIONS = (
    "workflow_runner",
    "unsandboxed_workflow_runner",
    "workflow_failure_exception_types",
    "debug_mode",
    "disable_safe_workflow_eviction",
)


@dataclass(frozen=True)
class Broken:
    workflow_id: str
    run_id: str
    message: str  # one line


@dataclass
class Tally:
    replayed: list[str] = field(default_factory=list)  # workflow ids that replay
    broken: list[Broken] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)  # closed while checked: skipped

    @property
    def exit_status(self) -> int:
        return EXIT_BREAKS if self.broken else 0

    def report(self) -> list[str]:
        """What the check prints: each run that would break, then the count."""
        lines = [f"{b.workflow_id} would break: {b.message}" for b in self.broken]
        if self.closed:
            lines.append(f"{len(self.closed)} runs closed while being checked: skipped")
        lines.append(
            f"{len(self.replayed)} open runs replay on this code, {len(self.broken)} would break"
        )
        return lines


def failure_message(failure: BaseException) -> str:
    """A replay failure in one line: Core's message when the SDK hands over Core's whole
    `Failure { failure: Some(Failure { message: "..." ... }) }` dump, else the error's text."""
    text = str(failure)
    inner = _CORE_MESSAGE.search(text)
    text = inner.group(1).replace('\\"', '"') if inner else text
    return one_line(text) or type(failure).__name__


def one_line(text: str) -> str:
    """`text` on one line: whitespace runs collapsed, other control characters escaped, so a
    workflow id or a message cannot move a terminal's cursor or forge a line."""
    collapsed = " ".join(text.split())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in collapsed)


def replayer(
    client: Client, workflows: Sequence[type], worker_options: dict[str, Any] | None = None
) -> Replayer:
    """A Replayer that runs `workflows` as a `Worker(client, workflows=..., **worker_options)`
    would: same converter, runtime, interceptors and runner."""
    options = dict(worker_options or {})
    client_config = client.config(active_config=True)
    from_client = [i for i in client_config["interceptors"] if isinstance(i, Interceptor)]
    shared = {k: options[k] for k in _REPLAY_OPTIONS if k in options}
    shared.setdefault("workflow_runner", SandboxedWorkflowRunner())
    return Replayer(
        workflows=list(workflows),
        namespace=client.namespace,
        data_converter=client.data_converter,
        interceptors=[*from_client, *options.get("interceptors", ())],
        runtime=client.service_client.config.runtime,
        **shared,
    )


class Progress:
    """`checked i of n` on one terminal line, rewritten in place; silent unless `stream` is
    given and there are at least PROGRESS_FROM runs."""

    def __init__(self, stream: TextIO | None, total: int) -> None:
        self.stream = stream if total >= PROGRESS_FROM else None
        self.total = total
        self.done = 0
        self._shown = 0.0

    def step(self) -> None:
        self.done += 1
        now = time.monotonic()
        if self.stream is not None and (now - self._shown > 0.1 or self.done == self.total):
            self._shown = now
            self.stream.write(f"\rchecked {self.done} of {self.total} open runs")
            self.stream.flush()

    def clear(self) -> None:
        if self.stream is not None and self.done:
            self.stream.write("\r\033[K")
            self.stream.flush()


async def _history(client: Client, workflow_id: str, run_id: str) -> WorkflowHistory | None:
    """The run's history, or None once it has closed (or is gone, past retention)."""
    try:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    if history.events and history.events[-1].event_type in CLOSE_EVENTS:
        return None
    return history


async def _open_histories(
    client: Client, query: str, tally: Tally, progress: Progress
) -> AsyncIterator[WorkflowHistory]:
    """Each listed run's history, fetched FETCH_AT_ONCE at a time while the list is paged."""
    pending: set[asyncio.Task[tuple[str, WorkflowHistory | None]]] = set()
    seen: set[str] = set()

    async def fetch(workflow_id: str, run_id: str) -> tuple[str, WorkflowHistory | None]:
        return workflow_id, await _history(client, workflow_id, run_id)

    def settled(
        done: set[asyncio.Task[tuple[str, WorkflowHistory | None]]],
    ) -> list[WorkflowHistory]:
        found = []
        for task in done:
            workflow_id, history = task.result()
            if history is None:
                tally.closed.append(workflow_id)
                progress.step()
            else:
                found.append(history)
        return found

    try:
        async for execution in client.list_workflows(query, page_size=PAGE_SIZE):
            if execution.run_id in seen:  # a page boundary may move while runs close
                continue
            seen.add(execution.run_id)
            pending.add(asyncio.create_task(fetch(execution.id, execution.run_id)))
            if len(pending) >= FETCH_AT_ONCE:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for history in settled(done):
                    yield history
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for history in settled(done):
                yield history
    finally:
        for task in pending:
            task.cancel()


async def check_open_runs(
    client: Client,
    workflows: Sequence[type],
    worker_options: dict[str, Any] | None = None,
    *,
    query: str = OPEN_RUNS,
    progress: TextIO | None = None,
) -> Tally:
    """Replay every run `query` lists on `workflows`; `progress`: a terminal to show it on."""
    tally = Tally()
    total = (await client.count_workflows(query)).count if progress is not None else 0
    shown = Progress(progress, total)
    try:
        histories = _open_histories(client, query, tally, shown)
        async with replayer(client, workflows, worker_options).workflow_replay_iterator(
            histories
        ) as results:
            async for result in results:
                history = result.history
                if result.replay_failure is None:
                    tally.replayed.append(history.workflow_id)
                else:
                    message = failure_message(result.replay_failure)
                    tally.broken.append(
                        Broken(one_line(history.workflow_id), history.run_id, message)
                    )
                shown.step()
    finally:
        shown.clear()
    return tally


async def run(
    client: Client,
    workflows: Sequence[type],
    worker_options: dict[str, Any],
    out: TextIO,
    progress: TextIO | None,
) -> int:
    """The command: check, print the report to `out`, return the exit status. A lost server
    is Temporal unreachable (exit 3); a namespace the server does not know, a bad setting."""
    try:
        tally = await check_open_runs(client, workflows, worker_options, progress=progress)
    except RPCError as err:
        if err.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            raise TemporalUnreachableError(
                f"lost Temporal while checking open runs: {one_line(err.message)}"
            ) from None
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ConfigError(
                f"TEMPORAL_NAMESPACE={client.namespace!r}: {one_line(err.message)}"
            ) from None
        raise
    for line in tally.report():
        print(line, file=out)
    return tally.exit_status


def terminal(stream: TextIO) -> TextIO | None:
    """`stream` if it is a terminal (where progress belongs), else None."""
    with contextlib.suppress(AttributeError, ValueError):
        if stream.isatty():
            return stream
    return None


async def _connect_and_run(config: WorkerConfig, workflows: Sequence[type]) -> int:
    client = await connect(config, **observability.client_options())
    worker_options = observability.worker_options()
    return await run(client, workflows, worker_options, sys.stdout, terminal(sys.stderr))


def main(config: WorkerConfig, workflows: Sequence[type]) -> int:
    """The check as worker.py runs it: connected as the worker connects (Vault, TLS, tracing),
    the report on stdout, progress on stderr when that is a terminal.

    The log goes to stderr, so stdout stays the report. At the default LOG_LEVEL (INFO) it
    says errors only: the SDK's warning for each failed replay would repeat the report with a
    traceback, and the worker's own log already warns of a connection without TLS.
    """
    level = "ERROR" if config.log_level == "INFO" else config.log_level
    with contextlib.redirect_stdout(sys.stderr):  # configure_logging writes to sys.stdout
        observability.configure_logging(level, config.log_file, config.log_format)
    observability.init_observability()
    try:
        return asyncio.run(_connect_and_run(config, workflows))
    finally:
        observability.shutdown()
