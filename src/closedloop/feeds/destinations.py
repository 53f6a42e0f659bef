"""Where a feed's file goes: a local folder, FTPS, SFTP or an HTTPS webhook.

Every destination delivers under a temporary name and renames at the end, so the recipient
never reads a partial file; a checksum sidecar (`NAME.sha256`) follows the file when asked.
Transient faults (a dropped connection, a timeout, a 4xx FTP reply, an HTTP 5xx) raise
`DeliveryError(transient=True)`; the run retries them with exponential backoff. Everything
else (a certificate or host key that does not verify, a refused login, a server without TLS)
fails at once.

Outbound safety: the host must resolve to public addresses only, unless it is listed in
`FEEDS__ALLOWED_HOSTS` (loopback, private, link-local and reserved ranges are refused, also
as IPv4-mapped IPv6). FTPS uses explicit TLS with the data channel protected (`PROT P`,
TLS session reused), the certificate checked against the system's CAs, a CA file or a
pinned SHA-256 fingerprint. SFTP checks the host key against a known_hosts file or a pinned
fingerprint; an unknown key is refused before any credential is sent. Webhooks post JSON
batches signed with HMAC-SHA256 and do not follow redirects. Credentials are looked up by
name in settings or the secrets file when a run needs them; they are never stored in a
definition or written to a log.
"""

from __future__ import annotations

import asyncio
import contextlib

# bandit B402: only FTP_TLS is used, with PROT P and a verified certificate (ADR 0004).
import ftplib  # nosec B402
import hashlib
import hmac
import io
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

from closedloop.config import Settings
from closedloop.feeds.definition import (
    Destination,
    FtpsDestination,
    LocalDestination,
    SftpDestination,
    WebhookDestination,
)
from closedloop.outbound import DeliveryError, check_host

__all__ = ["DeliveryError", "check_host", "deliver", "secret", "staging_path"]


def secret(settings: Settings, name: str) -> str:
    """The credential called `name`: from the secrets file, else from `FEEDS__SECRETS`."""
    path = settings.feeds.secrets_file
    if path is not None:
        try:
            found = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
            raise DeliveryError(
                f"cannot read the secrets file `{path}`: {type(exc).__name__}", transient=False
            ) from None
        if isinstance(found, dict) and isinstance(found.get(name), str):
            return str(found[name])
    value = settings.feeds.secrets.get(name)
    if value is None:
        raise DeliveryError(
            f"secret `{name}` is not set: add it to `CLOSEDLOOP_FEEDS__SECRETS` or the "
            "secrets file (`CLOSEDLOOP_FEEDS__SECRETS_FILE`)",
            transient=False,
        )
    return value.get_secret_value()


def staging_path(destination: Destination, settings: Settings, feed: str, run_id: str) -> Path:
    """Where a run writes its file: in the target folder for a local destination (then
    renamed), in the staging folder for the others."""
    if isinstance(destination, LocalDestination):
        folder = _local_folder(destination, settings)
        return folder / f".{feed}.{run_id}.part"
    folder = Path(settings.feeds.staging_dir) / feed
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{run_id}.part"


def _local_folder(destination: LocalDestination, settings: Settings) -> Path:
    root = Path(settings.feeds.local_dir).resolve()
    folder = (root / destination.path).resolve()
    if folder != root and root not in folder.parents:
        raise DeliveryError(f"`{destination.path}` leaves the exports folder", transient=False)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _sidecar(name: str, checksum: str) -> bytes:
    return f"{checksum}  {name}\n".encode()


def _deliver_local(
    destination: LocalDestination, settings: Settings, staged: Path, name: str, checksum: str
) -> str:
    folder = _local_folder(destination, settings)
    with staged.open("rb+") as handle:
        os.fsync(handle.fileno())
    final = folder / name
    staged.replace(final)
    if destination.checksum:
        part = folder / f".{name}.sha256.part"
        part.write_bytes(_sidecar(name, checksum))
        part.replace(folder / f"{name}.sha256")
    return str(final)


# FTPS -----------------------------------------------------------------------------------


def _tls_context(ca_file: str | None, fingerprint: str | None) -> ssl.SSLContext:
    if fingerprint is not None and ca_file is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the pinned fingerprint is checked instead
    else:
        context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _check_pin(sock: ssl.SSLSocket, fingerprint: str | None) -> None:
    if fingerprint is None:
        return
    der = sock.getpeercert(binary_form=True)
    found = hashlib.sha256(der or b"").hexdigest()
    if not hmac.compare_digest(found, fingerprint):
        raise DeliveryError(
            f"the server's certificate has fingerprint {found}, not the pinned one: refused",
            transient=False,
        )


class _FTPS(ftplib.FTP_TLS):
    """Explicit FTPS that protects every data channel, reuses the control channel's TLS
    session on it (servers such as vsftpd require that) and checks a pinned certificate."""

    fingerprint: str | None = None

    def auth(self) -> str:
        reply = super().auth()
        if not isinstance(self.sock, ssl.SSLSocket):
            raise DeliveryError("the control channel is not encrypted", transient=False)
        _check_pin(self.sock, self.fingerprint)
        return reply

    def ntransfercmd(
        self, cmd: str, rest: int | str | None = None
    ) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)  # noqa: S321 - wrapped below
        if not self._prot_p:  # type: ignore[attr-defined]
            conn.close()
            raise DeliveryError("refusing a data channel without PROT P", transient=False)
        session = self.sock.session if isinstance(self.sock, ssl.SSLSocket) else None
        wrapped = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
        _check_pin(wrapped, self.fingerprint)
        return wrapped, size


def _ftps_upload(
    destination: FtpsDestination,
    settings: Settings,
    staged: Path,
    name: str,
    checksum: str,
    run_id: str,
) -> str:
    addresses = check_host(destination.host, destination.port, settings)
    password = secret(settings, destination.password_secret)
    context = _tls_context(destination.ca_file, destination.fingerprint)
    ftp = _FTPS(context=context, timeout=settings.feeds.timeout_seconds)
    ftp.fingerprint = destination.fingerprint
    try:
        ftp.connect(addresses[0], destination.port)
        ftp.host = destination.host.strip("[]")  # the certificate names the host, not the address
        try:
            ftp.auth()
        except ftplib.error_perm as exc:
            raise DeliveryError(
                f"`{destination.host}` does not offer TLS (AUTH TLS: {exc}): refused; "
                "plain FTP is never used",
                transient=False,
            ) from None
        ftp.login(destination.user, password)
        try:
            ftp.prot_p()
        except ftplib.error_perm as exc:
            raise DeliveryError(
                f"`{destination.host}` refuses to protect the data channel (PROT P: {exc})",
                transient=False,
            ) from None
        ftp.set_pasv(True)
        if destination.directory not in ("", "/"):
            ftp.cwd(destination.directory)
        _ftp_put(ftp, staged, name, run_id)
        if destination.checksum:
            _ftp_put_bytes(ftp, _sidecar(name, checksum), f"{name}.sha256", run_id)
        with contextlib.suppress(*ftplib.all_errors):
            ftp.quit()
    finally:
        ftp.close()
    return f"ftps://{destination.host}:{destination.port}{_join(destination.directory, name)}"


def _join(directory: str, name: str) -> str:
    directory = directory if directory.startswith("/") else f"/{directory}"
    return f"{directory.rstrip('/')}/{name}"


def _ftp_rename(ftp: ftplib.FTP, temporary: str, name: str) -> None:
    with contextlib.suppress(ftplib.error_perm):
        ftp.delete(name)
    ftp.rename(temporary, name)


def _ftp_put(ftp: ftplib.FTP, staged: Path, name: str, run_id: str) -> None:
    temporary = f".{name}.{run_id}.part"
    with staged.open("rb") as handle:
        ftp.storbinary(f"STOR {temporary}", handle, blocksize=256 * 1024)
    _ftp_rename(ftp, temporary, name)


def _ftp_put_bytes(ftp: ftplib.FTP, data: bytes, name: str, run_id: str) -> None:
    temporary = f".{name}.{run_id}.part"
    ftp.storbinary(f"STOR {temporary}", io.BytesIO(data))
    _ftp_rename(ftp, temporary, name)


# SFTP -----------------------------------------------------------------------------------


async def _sftp_upload_async(
    destination: SftpDestination,
    settings: Settings,
    staged: Path,
    name: str,
    checksum: str,
    run_id: str,
) -> None:
    import asyncssh

    pinned = destination.fingerprint

    class _Client(asyncssh.SSHClient):
        def validate_host_public_key(
            self, host: str, addr: str, port: int, key: asyncssh.SSHKey
        ) -> bool:
            return pinned is not None and hmac.compare_digest(key.get_fingerprint("sha256"), pinned)

    options: dict[str, Any] = {
        "username": destination.user,
        "known_hosts": destination.known_hosts if destination.known_hosts else (),
        "client_factory": _Client,
        "connect_timeout": settings.feeds.timeout_seconds,
        "login_timeout": settings.feeds.timeout_seconds,
        "agent_path": None,
        "client_keys": None,
        "password": None,
        "config": None,
    }
    if destination.key_secret is not None:
        options["client_keys"] = [
            asyncssh.import_private_key(secret(settings, destination.key_secret))
        ]
    if destination.password_secret is not None:
        options["password"] = secret(settings, destination.password_secret)
    async with (
        asyncssh.connect(destination.host.strip("[]"), destination.port, **options) as conn,
        conn.start_sftp_client() as sftp,
    ):
        folder = destination.directory.rstrip("/") or "/"

        async def put(local: Path | None, data: bytes | None, final: str) -> None:
            temporary = f"{folder}/.{final}.{run_id}.part"
            target = f"{folder}/{final}"
            if local is not None:
                await sftp.put(str(local), temporary)
            else:
                async with sftp.open(temporary, "wb") as handle:
                    await handle.write(data or b"")
            try:
                await sftp.posix_rename(temporary, target)
            except asyncssh.SFTPOpUnsupported:
                with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                    await sftp.remove(target)
                await sftp.rename(temporary, target)

        await put(staged, None, name)
        if destination.checksum:
            await put(None, _sidecar(name, checksum), f"{name}.sha256")


def _sftp_upload(
    destination: SftpDestination,
    settings: Settings,
    staged: Path,
    name: str,
    checksum: str,
    run_id: str,
) -> str:
    import asyncssh

    check_host(destination.host, destination.port, settings)
    try:
        asyncio.run(
            asyncio.wait_for(
                _sftp_upload_async(destination, settings, staged, name, checksum, run_id),
                timeout=settings.feeds.timeout_seconds * 20,
            )
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise DeliveryError(
            f"the host key of `{destination.host}` is not known or does not match "
            f"({exc.reason}): refused",
            transient=False,
        ) from None
    except asyncssh.PermissionDenied:
        raise DeliveryError(
            f"`{destination.host}` refused the login of `{destination.user}`", transient=False
        ) from None
    except asyncssh.SFTPConnectionLost as exc:
        raise DeliveryError(
            f"the SFTP session with `{destination.host}` was lost: {exc.reason}", transient=True
        ) from None
    except asyncssh.DisconnectError as exc:  # also a lost connection; OSError: in `deliver`
        raise DeliveryError(
            f"`{destination.host}` disconnected: {exc.reason}", transient=True
        ) from None
    except asyncssh.SFTPError as exc:
        raise DeliveryError(
            f"SFTP error on `{destination.host}`: {exc.reason}", transient=False
        ) from None
    folder = destination.directory.rstrip("/")
    return f"sftp://{destination.host}:{destination.port}/{folder}/{name}".replace("//.", "/.")


# Webhook --------------------------------------------------------------------------------


def sign(secret_value: str, timestamp: str, body: bytes) -> str:
    """`X-Closedloop-Signature`: `t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">`."""
    mac = hmac.new(secret_value.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _webhook_post(
    destination: WebhookDestination,
    settings: Settings,
    staged: Path,
    name: str,
    checksum: str,
    run_id: str,
    feed: str,
) -> str:
    import httpx

    url = httpx.URL(destination.url)
    if url.scheme != "https" and not settings.feeds.allow_plain_http:
        raise DeliveryError("webhooks need `https://`", transient=False)
    host = url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    check_host(host, port, settings)
    key = secret(settings, destination.signing_secret)
    size = destination.batch_rows or settings.feeds.batch_rows
    verify: Any = ssl.create_default_context(cafile=destination.ca_file)
    timeout = httpx.Timeout(settings.feeds.timeout_seconds)
    batches = _batches(staged, size)
    total = len(batches)
    with httpx.Client(verify=verify, timeout=timeout, follow_redirects=False) as client:
        for number, rows in enumerate(batches, start=1):
            body = orjson.dumps(
                {
                    "feed": feed,
                    "run_id": run_id,
                    "file_name": name,
                    "batch": number,
                    "batches": total,
                    "last": number == total,
                    "checksum": checksum if number == total else None,
                    "rows": rows,
                }
            )
            _post_batch(client, destination.url, body, key, f"{run_id}-{number}", settings)
    return destination.url


def _batches(staged: Path, size: int) -> list[list[Any]]:
    batches: list[list[Any]] = [[]]
    with staged.open("rb") as handle:
        for line in handle:
            if len(batches[-1]) >= size:
                batches.append([])
            batches[-1].append(orjson.loads(line))
    return batches


def _post_batch(
    client: Any, url: str, body: bytes, key: str, idempotency: str, settings: Settings
) -> None:
    import httpx

    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "closedloop-feeds",
        "Idempotency-Key": idempotency,
        "X-Closedloop-Signature": sign(key, timestamp, body),
    }
    try:
        response = client.post(url, content=body, headers=headers)
    except httpx.TransportError as exc:
        if isinstance(exc.__cause__, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY" in str(
            exc
        ):
            raise DeliveryError(
                f"certificate of `{url}` not verified: {exc}", transient=False
            ) from None
        raise DeliveryError(
            f"POST {url} failed: {type(exc).__name__}: {exc}", transient=True
        ) from None
    status = response.status_code
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        raise DeliveryError(
            f"POST {url} answered {status}: redirects are not followed", transient=False
        )
    transient = status in (408, 425, 429) or status >= 500
    raise DeliveryError(f"POST {url} answered {status}", transient=transient)


# One entry point ------------------------------------------------------------------------


def deliver(
    destination: Destination,
    settings: Settings,
    staged: Path,
    *,
    name: str,
    checksum: str,
    run_id: str,
    feed: str,
) -> str:
    """Deliver the staged file as `name` (one attempt); the place it went to."""
    try:
        if isinstance(destination, LocalDestination):
            return _deliver_local(destination, settings, staged, name, checksum)
        if isinstance(destination, FtpsDestination):
            return _ftps_upload(destination, settings, staged, name, checksum, run_id)
        if isinstance(destination, SftpDestination):
            return _sftp_upload(destination, settings, staged, name, checksum, run_id)
        return _webhook_post(destination, settings, staged, name, checksum, run_id, feed)
    except DeliveryError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(
            f"the certificate of `{_host_of(destination)}` does not verify: {exc.verify_message}",
            transient=False,
        ) from None
    except ssl.SSLError as exc:
        raise DeliveryError(
            f"TLS failed with `{_host_of(destination)}`: {exc}", transient=True
        ) from None
    except ftplib.error_perm as exc:
        raise DeliveryError(f"FTP server refused: {exc}", transient=False) from None
    except (ftplib.error_temp, ftplib.error_reply, ftplib.error_proto, EOFError) as exc:
        raise DeliveryError(f"FTP transfer failed: {exc}", transient=True) from None
    except OSError as exc:
        raise DeliveryError(
            f"connection to `{_host_of(destination)}` failed: {type(exc).__name__}: {exc}",
            transient=True,
        ) from None


def _host_of(destination: Destination) -> str:
    if isinstance(destination, FtpsDestination | SftpDestination):
        return destination.host
    if isinstance(destination, WebhookDestination):
        return destination.url
    return "local"
