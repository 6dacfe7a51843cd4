"""`complete_activity.py ... --usage <json>` as an agent outside the runner sends what its work
cost: a subprocess against the real dev server, tokens from the real `execute_build_phase`
activity. The usage travels in the completion (or the failure's details) as the history shows;
a malformed one is exit 1 with one line, and the activity is still open."""

from __future__ import annotations

import json
import socket
import time

import pytest
from temporalio.client import Client, WorkflowFailureError

from config import WorkerConfig
from harness.cli import run_cli
from models import BuildPhaseResult
from tests.helpers.cli import FAKE_TOKEN, assert_clean_error, dispatch, probe_worker
from tests.helpers.completions import completions, failures

USAGE = '{"cost_usd": 0.42, "input_tokens": 1200, "output_tokens": 800}'
SENT = {"cost_usd": 0.42, "input_tokens": 1200, "output_tokens": 800}


async def test_success_with_usage(client: Client, config: WorkerConfig, address: str) -> None:
    async with probe_worker(client, config):
        by_token, by_file, trailing = await dispatch(client, config, count=3)
        code, out, err = await run_cli(
            [by_token.token, "success", "build-complete", "--usage", USAGE], address
        )
        assert code == 0, err
        (record,) = [json.loads(line) for line in out.splitlines()]
        assert record["event"] == "activity_completed" and record["usage"] == SENT
        # with --task-file, and as `--usage=` before the message
        code, _, err = await run_cli(
            ["--task-file", str(by_file.path), "success", f"--usage={USAGE}", "done"], address
        )
        assert code == 0, err
        # a usage that knows nothing is no usage: the completion is the original's
        code, _, err = await run_cli([trailing.token, "success", "x", "--usage", "{}"], address)
        assert code == 0, err
        assert await by_token.handle.result() == BuildPhaseResult("success", "build-complete")
        assert await by_file.handle.result() == BuildPhaseResult("success", "done")
        await trailing.handle.result()
    assert await completions(by_token.handle) == [
        {"status": "success", "output": "build-complete", "usage": SENT}
    ]
    assert await completions(by_file.handle) == [
        {"status": "success", "output": "done", "usage": SENT}
    ]
    assert await completions(trailing.handle) == [{"status": "success", "output": "x"}]


async def test_failed_with_usage(client: Client, config: WorkerConfig, address: str) -> None:
    """A failed stage cost money too: its usage is the failure's one detail."""
    async with probe_worker(client, config):
        (task,) = await dispatch(client, config)
        code, out, err = await run_cli(
            ["--task-file", str(task.path), "failed", "tests are red", "--usage", '{"turns": 7}'],
            address,
        )
        assert code == 0, err
        assert json.loads(out)["usage"] == {"turns": 7}
        with pytest.raises(WorkflowFailureError):
            await task.handle.result()
    assert await failures(task.handle) == [("tests are red", [{"usage": {"turns": 7}}])]


MALFORMED = {
    "not JSON": (["--usage", "cost 0.42"], "--usage: not JSON: Expecting value (character 0)"),
    "not an object": (["--usage", "[0.42]"], "--usage: must be a JSON object with any of "),
    "unknown key": (["--usage", '{"cost": 0.42}'], "--usage: unknown key 'cost' (known: "),
    "negative cost": (["--usage", '{"cost_usd": -1}'], "--usage: cost_usd must be a number >= 0"),
    "text tokens": (
        ["--usage", '{"input_tokens": "1200"}'],
        "--usage: input_tokens must be a whole number >= 0, not '1200'",
    ),
    "NaN": (["--usage", '{"cost_usd": NaN}'], "--usage: NaN is not a number"),
    "no value": (["--usage"], "--usage needs a JSON object after it"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_usage_never_touches_the_network(
    case: str, silent_listener: tuple[str, socket.socket]
) -> None:
    """Checked with the other arguments: exit 1 and one line within seconds, no connection."""
    address, sock = silent_listener
    extra, expected = MALFORMED[case]
    started = time.monotonic()
    code, out, err = await run_cli([FAKE_TOKEN, "success", "done", *extra], address)
    line = assert_clean_error(code, out, err, 1, FAKE_TOKEN)
    assert line.startswith(f"complete_activity: {expected}"), line
    assert time.monotonic() - started < 5
    with pytest.raises(BlockingIOError):
        sock.accept()


async def test_malformed_usage_delivers_nothing(
    client: Client, config: WorkerConfig, address: str
) -> None:
    """Every malformed form against a live token, and with `heartbeat`, which sends no usage:
    exit 1 each time and the phase still waits; then the same token completes it."""
    async with probe_worker(client, config):
        (task,) = await dispatch(client, config)
        tries = [[task.token, "success", "done", *extra] for extra, _ in MALFORMED.values()] + [
            ["--task-file", str(task.path), "failed", "x", "--usage", '{"turns": 1.5}'],
            [task.token, "heartbeat", "working", "--usage", USAGE],
        ]
        for args in tries:
            code, out, err = await run_cli(args, address)
            assert_clean_error(code, out, err, 1, task.token)
        assert "--usage goes with success or failed, not heartbeat" in err
        pending = (await task.handle.describe()).raw_description.pending_activities
        assert len(pending) == 1  # the phase still waits for its agent
        assert await completions(task.handle) == [] and await failures(task.handle) == []
        code, _, err = await run_cli([task.token, "success", "done", "--usage", USAGE], address)
        assert code == 0, err
        assert await task.handle.result() == BuildPhaseResult("success", "done")
