"""Notifications through the Matrix client-server API, against a real Synapse homeserver.

Everything that arrives is read back through the API as a room member would see it; pings are
judged by the homeserver's own push rules (`/notifications?only=highlight` of a second member).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from structlog.testing import capture_logs
from temporalio.client import Client

from activities import notify as notify_module
from activities.notify import MAX_BODY_CHARS, ZWJ, notify, send_matrix_api
from activities.task_files import write_text_atomic
from config import WorkerConfig, load_config
from exceptions import ConfigError
from harness.agents import ScriptedAgent
from harness.env import make_config, running_worker
from harness.pipelines import (
    PipelineScript,
    originating_task,
    running_pipeline,
    start_pipeline,
    wait_stage,
)
from models import DecisionInput
from tests.helpers.checks import wait_for
from tests.servers.synapse import MatrixUser, Room, Synapse


def token_file(directory: Path, token: str) -> Path:
    return write_text_atomic(directory / "matrix-token", token + "\n")


def matrix_config(
    tmp: Path, synapse: Synapse, token: str, room: str, address: str = "localhost:7233"
) -> WorkerConfig:
    return make_config(
        tmp,
        address,
        matrix_homeserver=synapse.url,
        matrix_access_token_file=token_file(tmp, token),
        matrix_room=room,
    )


# --- configuration ----------------------------------------------------------------------------


def test_token_file_is_checked_at_start(tmp_path: Path) -> None:
    base = {"HOME": str(tmp_path), "MATRIX_HOMESERVER": "http://127.0.0.1:1"}
    with pytest.raises(ConfigError, match="MATRIX_ACCESS_TOKEN_FILE is not"):
        load_config(base)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config({**base, "MATRIX_ACCESS_TOKEN_FILE": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="cannot be read"):  # a directory: unreadable as text
        load_config({**base, "MATRIX_ACCESS_TOKEN_FILE": str(tmp_path)})
    empty = tmp_path / "empty"
    empty.write_text(" \n")
    with pytest.raises(ConfigError, match="is empty"):
        load_config({**base, "MATRIX_ACCESS_TOKEN_FILE": str(empty)})
    with pytest.raises(ConfigError, match="not an http"):
        load_config(
            {
                **base,
                "MATRIX_HOMESERVER": "matrix.example.org",
                "MATRIX_ACCESS_TOKEN_FILE": str(token_file(tmp_path, "t")),
            }
        )
    good = load_config({**base, "MATRIX_ACCESS_TOKEN_FILE": str(token_file(tmp_path, "secret"))})
    assert notify_module.uses_matrix_api(good)
    assert "secret" not in repr(good.public_fields())


# --- addressing -------------------------------------------------------------------------------


async def test_posts_to_room_by_id(tmp_path: Path, room: Room) -> None:
    config = matrix_config(tmp_path, room.synapse, room.notifier.access_token, room.room_id)
    assert await notify(config, "[ACTION] demo: block 1/1 needs review", key="run-a:block:1")
    [event] = room.notices()
    assert event["content"] == {
        "msgtype": "m.notice",
        "body": "[ACTION] demo: block 1/1 needs review",
        "m.mentions": {},
    }


@pytest.mark.parametrize("form", ["alias", "hash-name", "bare-name"])
async def test_posts_to_room_by_alias_and_by_name(
    tmp_path: Path,
    room: Room,
    form: str,
) -> None:
    matrix_room = {
        "alias": f"#{room.name}:{room.synapse.server_name}",
        "hash-name": f"#{room.name}",
        "bare-name": room.name,  # the server name comes from whoami, not from the URL
    }[form]
    config = matrix_config(tmp_path, room.synapse, room.notifier.access_token, matrix_room)
    assert await notify(config, f"addressed by {form}", key=f"run-{form}:block:1")
    assert [e["content"]["body"] for e in room.notices()] == [f"addressed by {form}"]


async def test_alias_is_resolved_once_per_process(tmp_path: Path, room: Room) -> None:
    config = matrix_config(tmp_path, room.synapse, room.notifier.access_token, room.name)
    assert await notify(config, "first", key="run-cache:block:1")
    alias = f"#{room.name}:{room.synapse.server_name}"
    with room.synapse.api(room.notifier.access_token) as http:  # the alias goes away...
        http.delete(f"/_matrix/client/v3/directory/room/{quote(alias, safe='')}").raise_for_status()
    assert await notify(config, "second", key="run-cache:block:2")  # ...the cached id still works
    assert [e["content"]["body"] for e in room.notices()] == [
        "first",
        "second",
    ]


async def test_unknown_alias_is_a_warning(
    tmp_path: Path, synapse: Synapse, notifier: MatrixUser
) -> None:
    config = matrix_config(tmp_path, synapse, notifier.access_token, "no-such-room")
    with capture_logs() as logs:
        assert await notify(config, "lost", key="run-x:block:1") is False
    [warning] = [e for e in logs if e["event"] == "matrix_send_failed"]
    assert warning["log_level"] == "warning"
    assert f"#no-such-room:{synapse.server_name}" in warning["error"]
    assert "M_NOT_FOUND" in warning["error"]


# --- idempotency ------------------------------------------------------------------------------


async def test_one_message_per_key_even_when_retried(tmp_path: Path, room: Room) -> None:
    config = matrix_config(tmp_path, room.synapse, room.notifier.access_token, room.room_id)
    run = uuid.uuid4()
    with capture_logs() as logs:
        assert await notify(config, "block one", key=f"{run}:block:1")
        assert await notify(config, "block two", key=f"{run}:block:2")
        # a retried activity sends the same keys again
        assert await notify(config, "block one", key=f"{run}:block:1")
        assert await notify(config, "block two", key=f"{run}:block:2")
    events = room.notices()
    assert [e["content"]["body"] for e in events] == ["block one", "block two"]
    sent = [e["event_id"] for e in logs if e["event"] == "matrix_sent"]
    assert sent == [events[0]["event_id"], events[1]["event_id"]] * 2


# --- failures are warnings --------------------------------------------------------------------


async def test_wrong_token_warns_and_returns(tmp_path: Path, room: Room) -> None:
    wrong = "syt_" + uuid.uuid4().hex
    for matrix_room in (room.room_id, room.name):
        config = matrix_config(tmp_path, room.synapse, wrong, matrix_room)
        with capture_logs() as logs:
            assert await notify(config, "never arrives", key="run-w:block:1") is False
        [warning] = [e for e in logs if e["event"] == "matrix_send_failed"]
        assert "401" in warning["error"] and "M_UNKNOWN_TOKEN" in warning["error"]
        assert wrong not in repr(logs)
    assert room.notices() == []


async def test_malformed_token_is_never_quoted(tmp_path: Path, room: Room) -> None:
    config = matrix_config(tmp_path, room.synapse, room.notifier.access_token, room.room_id)
    assert config.matrix_access_token_file is not None
    config.matrix_access_token_file.write_text(f"{room.notifier.access_token}\nsecond-line\n")
    with capture_logs() as logs:
        assert await notify(config, "lost", key="run-m:block:1") is False
    [warning] = logs
    assert warning["event"] == "matrix_send_failed"
    assert "more than one printable word" in warning["error"]
    assert room.notifier.access_token not in repr(logs)


async def test_unreadable_token_file_at_send_time_warns(tmp_path: Path, room: Room) -> None:
    config = matrix_config(tmp_path, room.synapse, room.notifier.access_token, room.room_id)
    assert config.matrix_access_token_file is not None
    config.matrix_access_token_file.unlink()  # rotated away after start-up
    with capture_logs() as logs:
        assert await notify(config, "lost", key="run-t:block:1") is False
    assert [e["event"] for e in logs] == ["matrix_send_failed"]


async def test_unreachable_and_silent_homeserver_time_out_without_blocking(
    tmp_path: Path,
) -> None:
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await release.wait()  # never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    try:
        config = make_config(
            tmp_path,
            matrix_access_token_file=token_file(tmp_path, "t"),
            matrix_homeserver=f"http://127.0.0.1:{port}",
            matrix_room="!room:tbw.test",
        )
        started = time.monotonic()
        with capture_logs() as logs:
            sent = await send_matrix_api(config, "hello", key="k", timeout=1.5, request_timeout=0.5)
        elapsed = time.monotonic() - started
        assert sent is False
        assert 1.4 < elapsed < 3
        assert ticks >= 20  # the loop kept running while the request hung
        [warning] = [e for e in logs if e["event"] == "matrix_send_failed"]
        assert "timed out" in warning["error"]
    finally:
        tick_task.cancel()
        release.set()
        server.close()
        await server.wait_closed()

    # the same settings, but nothing listens at the homeserver's port now
    with capture_logs() as logs:
        assert await notify(config, "hello", key="k") is False
    [warning] = [e for e in logs if e["event"] == "matrix_send_failed"]
    assert "ConnectError" in warning["error"]


async def test_transient_error_is_retried_with_the_same_transaction(
    tmp_path: Path, room: Room
) -> None:
    """A 502 from a proxy in front of Synapse: the retry posts, once."""
    request_lines: list[bytes] = []
    connections = 0

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with_first = True
        while data := await src.read(65536):
            if with_first:
                request_lines.append(data.split(b"\r\n", 1)[0])
                with_first = False
            dst.write(data)
            await dst.drain()
        dst.close()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            head = await reader.readuntil(b"\r\n\r\n")
            request_lines.append(head.split(b"\r\n", 1)[0])
            writer.write(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", room.synapse.port)
        await asyncio.gather(
            pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True
        )

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        config = make_config(
            tmp_path,
            matrix_homeserver=f"http://127.0.0.1:{port}",
            matrix_access_token_file=token_file(tmp_path, room.notifier.access_token),
            matrix_room=room.room_id,
        )
        assert await notify(config, "through a flaky proxy", key=f"{uuid.uuid4()}:block:1")
    finally:
        server.close()
        await server.wait_closed()
    puts = [line for line in request_lines if line.startswith(b"PUT ")]
    assert len(puts) == 2 and puts[0] == puts[1]  # same transaction id both times
    assert [e["content"]["body"] for e in room.notices()] == ["through a flaky proxy"]


# --- what arrives -----------------------------------------------------------------------------


async def test_mentions_are_neutralised_and_text_capped(tmp_path: Path, room: Room) -> None:
    config = matrix_config(tmp_path, room.synapse, room.notifier.access_token, room.room_id)
    text = f"@room look: finding for {room.bob.user_id} (bob), also @bob and @channel\x1b[31m"
    assert await notify(config, text, key=f"{uuid.uuid4()}:block:1")
    assert await notify(config, "x" * 50_000, key=f"{uuid.uuid4()}:block:2")
    # Control: the same notice with the words left as they are does ping bob.
    with room.synapse.api(room.notifier.access_token) as http:
        control = http.put(
            f"/_matrix/client/v3/rooms/{quote(room.room_id, safe='')}/send/m.room.message/"
            f"control-{uuid.uuid4().hex}",
            json={"msgtype": "m.notice", "body": text},
        ).json()["event_id"]

    neutral, long, _ = room.notices()
    body = neutral["content"]["body"]
    assert "@room" not in body and room.bob.user_id not in body and "@bob" not in body
    assert body == text.replace("@", "@" + ZWJ).replace("\x1b", "")
    assert neutral["content"]["m.mentions"] == {}
    assert set(neutral["content"]) == {"msgtype", "body", "m.mentions"}  # no format, no HTML
    assert len(long["content"]["body"]) == MAX_BODY_CHARS
    assert long["content"]["body"].endswith("[… truncated]")
    # The homeserver's push rules highlight only the control message for bob.
    pinged = [e["event_id"] for e in room.synapse.highlights(room.bob, room.room_id)]
    assert pinged == [control]


# --- the default transport is unchanged -------------------------------------------------------


async def test_script_is_used_without_a_homeserver(tmp_path: Path) -> None:
    script = tmp_path / "send-matrix.sh"
    out = tmp_path / "sent.txt"
    script.write_text(f'#!/bin/sh\nprintf "%s|%s\\n" "$1" "$2" >> {out}\n')
    script.chmod(0o755)
    config = make_config(tmp_path, matrix_room="sysadmin", send_matrix_script=script)
    assert await notify(config, "@room via script", key="run-s:block:1")
    assert out.read_text() == "sysadmin|@room via script\n"


# --- BuildPipelineWorkflow end to end ---------------------------------------------------------


class AnswerLosingProxy:
    """A TCP relay to Synapse that, after `lose_after` message PUTs, still delivers each further
    PUT but never relays the answer: the message is posted, the worker never hears so."""

    def __init__(self, upstream_port: int, lose_after: int) -> None:
        self.upstream_port = upstream_port
        self.lose_after = lose_after
        self.puts = 0
        self.lost = asyncio.Event()
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> AnswerLosingProxy:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        mute = False

        async def requests() -> None:
            nonlocal mute
            while data := await reader.read(65536):
                if data.startswith(b"PUT ") and b"/send/m.room.message/" in data.split(b"\r\n")[0]:
                    self.puts += 1
                    if self.puts > self.lose_after:
                        mute = True
                        self.lost.set()
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def answers() -> None:
            while data := await up_reader.read(65536):
                if not mute:
                    writer.write(data)
                    await writer.drain()
            writer.close()

        await asyncio.gather(requests(), answers(), return_exceptions=True)
        writer.close()
        up_writer.close()


async def test_pipeline_posts_one_message_per_block_across_a_retry(
    tmp_path: Path, room: Room, client: Client, address: str
) -> None:
    """Two blocks, two messages, even though notify_blocks is retried after block 2 was posted
    but its answer was lost (the worker is shut down while waiting for it)."""
    blocks = ["hard-coded @room password", {"description": "bucket open to the world"}]
    script = PipelineScript(blocks=blocks)
    direct = matrix_config(tmp_path, room.synapse, room.notifier.access_token, room.name, address)
    task_id, _ = originating_task(direct)

    async with (
        ScriptedAgent(direct.agent_task_dir, address, script.decide),
        AnswerLosingProxy(room.synapse.port, lose_after=1) as proxy,
    ):
        via_proxy = direct.model_copy(update={"matrix_homeserver": proxy.url})
        with capture_logs() as logs:
            async with running_worker(
                client, via_proxy, graceful_shutdown_timeout=timedelta(seconds=1)
            ):
                handle = await start_pipeline(client, direct, task_id)
                await asyncio.wait_for(proxy.lost.wait(), 60)
                await wait_for(lambda: len(room.notices()) == 2)
            # worker 1 is gone, notify_blocks attempt 1 with it; worker 2 takes the retry
            async with running_worker(client, direct):
                await wait_stage(handle, "awaiting-approval", timeout=60)
                await handle.execute_update("approve", DecisionInput(note="ok"))
                result = await asyncio.wait_for(handle.result(), 60)
    assert result.status == "complete"

    events = room.notices()
    assert [e["content"]["body"].splitlines()[0] for e in events] == [
        "[ACTION] demo-build: block 1/2 needs review",
        "[ACTION] demo-build: block 2/2 needs review",
    ]
    assert "@room" not in events[0]["content"]["body"]
    assert "@" + ZWJ + "room password" in events[0]["content"]["body"]
    # it really was retried: the history's started event is attempt 2
    attempts = [
        e.activity_task_started_event_attributes.attempt
        async for e in handle.fetch_history_events()
        if e.HasField("activity_task_started_event_attributes")
        and e.activity_task_started_event_attributes.attempt > 1
    ]
    assert attempts == [2]
    # attempt 2 skipped block 1 (delivered and recorded) and re-sent block 2 with the same
    # transaction id: the homeserver answered with the event already in the room
    assert [e["event"] for e in logs].count("notification_already_sent") == 1
    resent = [e["event_id"] for e in logs if e["event"] == "matrix_sent"]
    assert resent == [events[0]["event_id"], events[1]["event_id"]]


async def test_pipeline_carries_on_with_a_wrong_token(
    tmp_path: Path, room: Room, client: Client, address: str
) -> None:
    wrong = "syt_" + uuid.uuid4().hex
    config = matrix_config(tmp_path, room.synapse, wrong, room.room_id, address)
    script = PipelineScript(blocks=["root login enabled", "telnet open"])
    with capture_logs() as logs:
        async with running_pipeline(client, config, script.decide) as run:
            await wait_stage(run.handle, "awaiting-approval", timeout=60)
            await run.handle.execute_update("approve", DecisionInput(note="ok"))
            result = await asyncio.wait_for(run.handle.result(), 60)
    assert result.status == "complete"
    warnings = [e for e in logs if e["event"] == "matrix_send_failed"]
    assert len(warnings) == 2 and all("M_UNKNOWN_TOKEN" in w["error"] for w in warnings)
    assert all(w["log_level"] == "warning" for w in warnings)
    assert wrong not in repr(logs)
    assert room.notices() == []
