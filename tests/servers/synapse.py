"""A real Synapse homeserver for the tests: loopback only, SQLite, no federation, lean.

`make test` installs Synapse into `.test-tools/synapse` (its own virtual environment). The server
is configured from `--generate-config` (which writes the signing key and secrets) with the
listener, logging and rate limits replaced, and users are made through the shared-secret admin
registration API, the way an operator bootstraps a bot account.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml

from harness.env import ROOT, free_port

SYNAPSE_PYTHON = ROOT / ".test-tools" / "synapse" / "bin" / "python"
SERVER_NAME = "tbw.test"  # deliberately not the URL's host: bare room names need the real one
UNLIMITED = {"per_second": 10000, "burst_count": 10000}


@dataclass
class MatrixUser:
    user_id: str
    access_token: str


@dataclass
class Synapse:
    url: str
    server_name: str
    shared_secret: str
    port: int

    def api(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def register(self, localpart: str, *, admin: bool = False) -> MatrixUser:
        """Shared-secret registration (the admin API `register_new_matrix_user` uses)."""
        password = uuid.uuid4().hex
        with httpx.Client(base_url=self.url, timeout=30) as http:
            nonce = http.get("/_synapse/admin/v1/register").json()["nonce"]
            mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
            mac.update(
                b"\x00".join(
                    [
                        nonce.encode(),
                        localpart.encode(),
                        password.encode(),
                        b"admin" if admin else b"notadmin",
                    ]
                )
            )
            answer = http.post(
                "/_synapse/admin/v1/register",
                json={
                    "nonce": nonce,
                    "username": localpart,
                    "password": password,
                    "admin": admin,
                    "mac": mac.hexdigest(),
                },
            )
        answer.raise_for_status()
        body = answer.json()
        return MatrixUser(body["user_id"], body["access_token"])

    def create_room(
        self, owner: MatrixUser, alias_localpart: str, invite: list[str] | None = None
    ) -> str:
        with self.api(owner.access_token) as http:
            answer = http.post(
                "/_matrix/client/v3/createRoom",
                json={
                    "room_alias_name": alias_localpart,
                    "preset": "private_chat",
                    "invite": invite or [],
                },
            )
        answer.raise_for_status()
        return str(answer.json()["room_id"])

    def join(self, user: MatrixUser, room_id: str) -> None:
        with self.api(user.access_token) as http:
            http.post(
                f"/_matrix/client/v3/join/{quote(room_id, safe='')}", json={}
            ).raise_for_status()

    def messages(self, user: MatrixUser, room_id: str) -> list[dict[str, Any]]:
        """Every m.room.message in the room, oldest first, as the room's members see them."""
        with self.api(user.access_token) as http:
            answer = http.get(
                f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/messages",
                params={"dir": "b", "limit": "100", "filter": '{"types":["m.room.message"]}'},
            )
        answer.raise_for_status()
        return list(reversed(answer.json()["chunk"]))

    def highlights(self, user: MatrixUser, room_id: str) -> list[dict[str, Any]]:
        """Events in the room that pinged `user` (highlight), by the server's own push rules."""
        with self.api(user.access_token) as http:
            answer = http.get("/_matrix/client/v3/notifications", params={"only": "highlight"})
        answer.raise_for_status()
        return [n["event"] for n in answer.json()["notifications"] if n["room_id"] == room_id]


@dataclass
class Room:
    """A room on `synapse` with the worker's bot account (`notifier`) and an operator (`bob`)
    in it."""

    synapse: Synapse
    notifier: MatrixUser
    bob: MatrixUser
    room_id: str
    name: str  # the alias localpart: `#<name>:<server name>`

    def notices(self) -> list[dict[str, Any]]:
        """The bot's messages in the room, oldest first, as bob reads them."""
        messages = self.synapse.messages(self.bob, self.room_id)
        return [e for e in messages if e["sender"] == self.notifier.user_id]


def write_config(directory: Path, port: int) -> Path:
    subprocess.run(
        [
            str(SYNAPSE_PYTHON),
            "-m",
            "synapse.app.homeserver",
            "--server-name",
            SERVER_NAME,
            "--config-path",
            str(directory / "homeserver.yaml"),
            "--generate-config",
            "--report-stats=no",
            "--data-directory",
            str(directory / "data"),
        ],
        cwd=directory,
        check=True,
        capture_output=True,
        timeout=120,
    )
    config_path = directory / "homeserver.yaml"
    config = yaml.safe_load(config_path.read_text())
    log_config = directory / "log.yaml"
    log_config.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "formatters": {
                    "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
                },
                "handlers": {
                    "file": {
                        "class": "logging.FileHandler",
                        "formatter": "plain",
                        "filename": str(directory / "homeserver.log"),
                    }
                },
                "root": {"level": "WARNING", "handlers": ["file"]},
                "disable_existing_loggers": False,
            }
        )
    )
    config.update(
        {
            "listeners": [
                {
                    "port": port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "log_config": str(log_config),
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_domain_whitelist": [],
            "presence": {"enabled": False},
            "enable_metrics": False,
            "rc_message": UNLIMITED,
            "rc_registration": UNLIMITED,
            "rc_login": {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED},
            "rc_joins": {"local": UNLIMITED, "remote": UNLIMITED},
            "rc_invites": {"per_room": UNLIMITED, "per_user": UNLIMITED, "per_issuer": UNLIMITED},
            "rc_room_creation": UNLIMITED,
        }
    )
    config_path.write_text(yaml.safe_dump(config))
    return config_path


@contextlib.contextmanager
def running_synapse(directory: Path) -> Iterator[Synapse]:
    """Start Synapse, wait until its client API answers, and stop it afterwards."""
    if not SYNAPSE_PYTHON.exists():
        pytest.fail(f"{SYNAPSE_PYTHON} is missing: `make test` installs Synapse there")
    port = free_port()
    config_path = write_config(directory, port)
    shared_secret = str(yaml.safe_load(config_path.read_text())["registration_shared_secret"])
    url = f"http://127.0.0.1:{port}"
    out = (directory / "stdout.log").open("wb")
    proc = subprocess.Popen(
        [str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "-c", str(config_path)],
        cwd=directory,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/_matrix/client/versions", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"Synapse did not start (exit {proc.poll()}); see {directory}/stdout.log "
                    f"and {directory}/homeserver.log"
                )
            time.sleep(0.2)
        yield Synapse(url, SERVER_NAME, shared_secret, port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()
