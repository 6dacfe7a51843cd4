"""Bare Temporal: the least a worker needs to do each benchmarked job, as the baseline.

Run as `python -m bench.bare --address A --queue Q --dir D [--poll S] [--slots N]`. Async
activities hand out their token as a tiny file `<dir>/<workflow_id>.<n>.tok` (no YAML, no fsync),
the gate marker is `<dir>/<workflow_id>.gate`, a file approval is `<dir>/<workflow_id>.approved`:
the worker watches its directory (watchfiles, as worker.py does) and sends that workflow the
`approve` update.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker
from watchfiles import Change, awatch

HOUR = timedelta(hours=1)
ONE_TRY = RetryPolicy(maximum_attempts=1)


def _publish(path: Path, data: bytes) -> None:
    """Write then rename, so a reader never sees half a token (no fsync: the bare minimum)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class BareActivities:
    """Activities writing into one directory, as the production ones write the task queue."""

    def __init__(self, directory: Path, poll_seconds: float) -> None:
        self.dir = directory
        self.poll = poll_seconds

    @activity.defn(name="bare_async")
    async def bare_async(self, n: int) -> object:
        info = activity.info()
        _publish(self.dir / f"{info.workflow_id}.{n}.tok", info.task_token)
        activity.raise_complete_async()

    @activity.defn(name="bare_plain")
    async def bare_plain(self, n: int) -> int:
        return n

    @activity.defn(name="bare_mark_gate")
    async def bare_mark_gate(self) -> None:
        _publish(self.dir / f"{activity.info().workflow_id}.gate", b"")

    @activity.defn(name="bare_poll")
    async def bare_poll(self) -> str:
        """A gate poller: check one file every `poll` seconds (at most 10), heartbeating."""
        marker = self.dir / f"{activity.info().workflow_id}.approved"
        while True:
            if marker.exists():
                return "approved"
            activity.heartbeat()
            await asyncio.sleep(min(self.poll, 10.0))


class _Approvable:
    """The `approve` update both gated baselines share, refused before the gate opens."""

    def __init__(self) -> None:
        self.approved = False
        self.awaiting = False

    @workflow.update
    def approve(self) -> str:
        self.approved = True
        return "approved"

    @approve.validator
    def _can_approve(self) -> None:
        if not self.awaiting:
            raise ValueError("not awaiting")


@workflow.defn(name="BarePipeline")
class BarePipeline(_Approvable):
    """The pipeline's shape: 5 async-completed and 4 plain activities, one update gate."""

    async def _async(self, n: int) -> object:
        return await workflow.execute_activity(
            "bare_async", n, start_to_close_timeout=HOUR, retry_policy=ONE_TRY
        )

    async def _plain(self, n: int) -> object:
        return await workflow.execute_activity(
            "bare_plain", n, start_to_close_timeout=HOUR, retry_policy=ONE_TRY
        )

    @workflow.run
    async def run(self) -> int:
        await self._async(1)
        await self._async(2)
        await self._async(3)
        await self._plain(4)
        await self._async(5)
        await workflow.execute_activity("bare_mark_gate", start_to_close_timeout=HOUR)
        self.awaiting = True
        await workflow.wait_condition(lambda: self.approved)
        self.awaiting = False
        await self._plain(7)
        await self._async(8)
        await self._plain(9)
        return 9


@workflow.defn(name="BareGate")
class BareGate(_Approvable):
    """Parked like the pipeline's gate: wait_condition raced with a heartbeating poller."""

    @workflow.run
    async def run(self) -> int:
        poller = workflow.start_activity(
            "bare_poll",
            schedule_to_close_timeout=timedelta(days=7),
            heartbeat_timeout=timedelta(seconds=30),
        )
        await workflow.execute_activity("bare_mark_gate", start_to_close_timeout=HOUR)
        self.awaiting = True
        await workflow.wait_condition(lambda: self.approved or poller.done())
        if not poller.done():
            poller.cancel()
        await workflow.execute_activity(
            "bare_async", 8, start_to_close_timeout=HOUR, retry_policy=ONE_TRY
        )
        return 1


@workflow.defn(name="BareTimerGate")
class BareTimerGate(_Approvable):
    """Parked on a timer alone: `wait_condition` with the gate's 7 days, the update to leave."""

    @workflow.run
    async def run(self) -> int:
        await workflow.execute_activity("bare_mark_gate", start_to_close_timeout=HOUR)
        self.awaiting = True
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: self.approved, timeout=timedelta(days=7))
        await workflow.execute_activity(
            "bare_async", 8, start_to_close_timeout=HOUR, retry_policy=ONE_TRY
        )
        return 1


@workflow.defn(name="BareTokens")
class BareTokens:
    """`count` async activities at once: a supply of live task tokens."""

    @workflow.run
    async def run(self, count: int) -> int:
        await asyncio.gather(
            *(
                workflow.execute_activity(
                    "bare_async", n, start_to_close_timeout=HOUR, retry_policy=ONE_TRY
                )
                for n in range(count)
            )
        )
        return count


async def watch_approvals(client: Client, directory: Path, stop: asyncio.Event) -> None:
    """`<wf>.approved` appearing -> `approve` to that workflow, each in a task of its own."""
    sent: set[asyncio.Task[object]] = set()

    async def approve(workflow_id: str) -> None:
        with contextlib.suppress(Exception):
            await client.get_workflow_handle(workflow_id).execute_update("approve")

    async for changes in awatch(
        directory,
        step=50,
        stop_event=stop,
        watch_filter=lambda c, p: c != Change.deleted and p.endswith(".approved"),
    ):
        for _, path in changes:
            task = asyncio.create_task(approve(Path(path).name.removesuffix(".approved")))
            sent.add(task)
            task.add_done_callback(sent.discard)


async def serve(address: str, queue: str, directory: Path, poll: float, slots: int | None) -> None:
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    acts = BareActivities(directory, poll)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Worker(
        client,
        task_queue=queue,
        workflows=[BarePipeline, BareGate, BareTimerGate, BareTokens],
        activities=[acts.bare_async, acts.bare_plain, acts.bare_mark_gate, acts.bare_poll],
        max_concurrent_activities=slots,
    ):
        watcher = asyncio.create_task(watch_approvals(client, directory, stop))
        await stop.wait()
        await watcher


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--poll", type=float, default=30.0)
    parser.add_argument("--slots", type=int, default=None)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(args.address, args.queue, args.dir, args.poll, args.slots))
    os._exit(0)  # skip interpreter teardown, as worker.py does


if __name__ == "__main__":
    main()
