"""Real servers for the destination tests, each in a thread on 127.0.0.1: pyftpdlib with TLS
(a trustme certificate), asyncssh SFTP, and an HTTPS receiver."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import logging
import ssl
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import trustme

with warnings.catch_warnings():  # pyftpdlib still imports asyncore and asynchat
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler, TLS_DTPHandler, TLS_FTPHandler
    from pyftpdlib.servers import FTPServer

logging.getLogger("pyftpdlib").setLevel(logging.ERROR)
logging.getLogger("asyncssh").setLevel(logging.WARNING)

FTP_USER = "feeds"
FTP_PASSWORD = "s3cret-ftp"
SFTP_PASSWORD = "s3cret-sftp"


@dataclass
class Certificates:
    ca_file: Path
    chain_file: Path
    fingerprint: str  # SHA-256 of the server certificate, hex
    server: trustme.LeafCert


def certificates(folder: Path) -> Certificates:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = folder / "ca.pem"
    chain = folder / "server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf.private_key_and_cert_chain_pem.write_to_path(str(chain))
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    import hashlib

    return Certificates(ca_file, chain, hashlib.sha256(der).hexdigest(), leaf)


@dataclass
class FtpServer:
    port: int
    root: Path
    stores: list[str] = field(default_factory=list)


@contextlib.contextmanager
def ftp_server(
    root: Path,
    certs: Certificates | None,
    *,
    drops: int = 0,
    refuse_prot_p: bool = False,
    slow: dict[str, float] | None = None,
) -> Iterator[FtpServer]:
    """An FTPS server (explicit TLS, TLS required on control and data) or, without
    certificates, a plain FTP server. `drops`: that many uploads lose their connection
    after the first bytes arrive. `slow["delay"]`: seconds the server sleeps per chunk it
    receives (read at each chunk, so a test can speed it up again)."""
    root.mkdir(parents=True, exist_ok=True)
    authorizer = DummyAuthorizer()
    authorizer.add_user(FTP_USER, FTP_PASSWORD, str(root), perm="elradfmwMT")
    state = {"drops": drops}
    info = FtpServer(port=0, root=root)

    class _DTP(TLS_DTPHandler):  # type: ignore[misc]
        def recv(self, buffer_size: int) -> bytes:
            chunk: bytes = super().recv(buffer_size)
            if slow and chunk:
                time.sleep(slow.get("delay", 0.0))
            if state["drops"] > 0 and chunk and self.receive:
                state["drops"] -= 1  # the connection drops after the first bytes arrived
                self.cmd_channel.close()
                self.close()
                return b""
            return chunk

    handler: type[Any]
    if certs is None:

        class _Plain(FTPHandler):  # type: ignore[misc]
            pass

        handler = _Plain
    else:

        class _TLS(TLS_FTPHandler):  # type: ignore[misc]
            def ftp_PROT(self, line: str) -> None:  # noqa: N802 - pyftpdlib's naming
                if refuse_prot_p:
                    self.respond("534 Data channel protection not available.")
                    return
                super().ftp_PROT(line)

            def ftp_STOR(self, file: str, mode: str = "w") -> Any:  # noqa: N802
                info.stores.append(Path(file).name)
                return super().ftp_STOR(file, mode)

        _TLS.certfile = str(certs.chain_file)
        _TLS.tls_control_required = True
        _TLS.tls_data_required = True
        _TLS.dtp_handler = _DTP
        handler = _TLS
    handler.authorizer = authorizer
    handler.passive_ports = None
    handler.banner = "closedloop test server"
    server = FTPServer(("127.0.0.1", 0), handler)
    info.port = server.socket.getsockname()[1]
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"timeout": 0.05, "handle_exit": False}, daemon=True
    )
    thread.start()
    try:
        yield info
    finally:
        server.close_all()
        thread.join(5)


@dataclass
class SftpServer:
    port: int
    root: Path
    host_key: asyncssh.SSHKey
    client_key: asyncssh.SSHKey

    @property
    def fingerprint(self) -> str:
        return str(self.host_key.get_fingerprint("sha256"))

    def known_hosts(self, folder: Path) -> Path:
        path = folder / "known_hosts"
        public = self.host_key.export_public_key().decode().strip()
        path.write_text(f"[127.0.0.1]:{self.port} {public}\n")
        return path


@contextlib.contextmanager
def sftp_server(root: Path) -> Iterator[SftpServer]:
    """An asyncssh SFTP server: user `feeds` with a password or a key, chrooted to `root`."""
    root.mkdir(parents=True, exist_ok=True)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())

    class _Server(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            return username == FTP_USER and password == SFTP_PASSWORD

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> Any:
        return await asyncssh.create_server(
            _Server,
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            authorized_client_keys=authorized,
            sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(root).encode()),
        )

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    port = server.sockets[0].getsockname()[1]
    try:
        yield SftpServer(port, root, host_key, client_key)
    finally:

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@dataclass
class Receiver:
    url: str
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answered in turn, then 200


@contextlib.contextmanager
def https_receiver(certs: Certificates, *, redirect: str | None = None) -> Iterator[Receiver]:
    """An HTTPS server that records each POST and answers the scripted statuses."""
    receiver = Receiver(url="")

    class _Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status = receiver.statuses.pop(0) if receiver.statuses else 200
            if redirect is not None:
                self.send_response(302)
                self.send_header("Location", redirect)
            else:
                self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    certs.server.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    receiver.url = f"https://127.0.0.1:{server.server_address[1]}/hooks/crm"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
