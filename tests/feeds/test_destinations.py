"""Each destination against a real server: FTPS (pyftpdlib, TLS on control and data), SFTP
(asyncssh), an HTTPS webhook receiver; refusals of plain FTP, unknown keys and certificates,
private addresses; a connection dropped mid-upload is retried into one complete file."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr, ValidationError

from closedloop import feeds
from closedloop.config import Settings
from closedloop.feeds.definition import FtpsDestination
from closedloop.feeds.destinations import DeliveryError, check_host
from tests.feeds.conftest import Shop, feed_settings, gold_feed
from tests.feeds.servers import (
    FTP_USER,
    certificates,
    ftp_server,
    https_receiver,
    sftp_server,
)


@pytest.fixture
def certs(tmp_path: Path) -> Any:
    return certificates(tmp_path)


def _customers(shop: Shop, count: int = 5) -> None:
    for n in range(count):
        shop.customer(n)


def _run(shop: Shop, destination: dict[str, Any], **overrides: Any) -> feeds.FeedRun:
    feeds.save_feed(shop.log.engine, gold_feed(destination=destination, **overrides), create=None)
    return feeds.run_now(shop.log.engine, shop.settings, "gold")


def _rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode()), delimiter=";"))


def _ftps(port: int, certs: Any, **extra: Any) -> dict[str, Any]:
    return {
        "type": "ftps",
        "host": "127.0.0.1",
        "port": port,
        "user": FTP_USER,
        "password_secret": "ftp-pass",
        "ca_file": str(certs.ca_file),
        "directory": "/",
        "checksum": True,
        **extra,
    }


# FTPS -------------------------------------------------------------------------------------


def test_ftps_upload_with_ca_file_and_checksum(shop: Shop, certs: Any, tmp_path: Path) -> None:
    _customers(shop)
    with ftp_server(tmp_path / "ftp", certs) as server:
        run = _run(shop, _ftps(server.port, certs))
    assert run.state == "succeeded", run.error
    files = sorted(p.name for p in server.root.iterdir())
    assert files == [str(run.file_name), f"{run.file_name}.sha256"]
    data = (server.root / str(run.file_name)).read_bytes()
    assert hashlib.sha256(data).hexdigest() == run.checksum
    assert len(_rows(data)) == 6  # header and five customers
    assert (
        server.root / f"{run.file_name}.sha256"
    ).read_text() == f"{run.checksum}  {run.file_name}\n"
    # uploaded under a temporary name first, then renamed
    assert server.stores[0].startswith(".gold-") and server.stores[0].endswith(".part")


def test_ftps_pinned_fingerprint(shop: Shop, certs: Any, tmp_path: Path) -> None:
    _customers(shop, 2)
    with ftp_server(tmp_path / "ftp", certs) as server:
        good = _run(shop, _ftps(server.port, certs, ca_file=None, fingerprint=certs.fingerprint))
        wrong = _run(shop, _ftps(server.port, certs, ca_file=None, fingerprint="ab" * 32))
    assert good.state == "succeeded", good.error
    assert wrong.state == "failed"
    assert "fingerprint" in str(wrong.error) and "refused" in str(wrong.error)


def test_ftps_unknown_certificate_refused(shop: Shop, certs: Any, tmp_path: Path) -> None:
    _customers(shop, 1)
    with ftp_server(tmp_path / "ftp", certs) as server:
        run = _run(shop, _ftps(server.port, certs, ca_file=None))  # system CAs only
    assert run.state == "failed"
    assert "does not verify" in str(run.error)
    assert run.stats is None or run.stats.get("retries", 0) == 0
    assert list(server.root.iterdir()) == []


def test_plain_ftp_server_refused(shop: Shop, certs: Any, tmp_path: Path) -> None:
    _customers(shop, 1)
    with ftp_server(tmp_path / "ftp", None) as server:
        run = _run(shop, _ftps(server.port, certs))
    assert run.state == "failed"
    assert "does not offer TLS" in str(run.error)
    assert list(server.root.iterdir()) == []


def test_server_refusing_prot_p_refused(shop: Shop, certs: Any, tmp_path: Path) -> None:
    _customers(shop, 1)
    with ftp_server(tmp_path / "ftp", certs, refuse_prot_p=True) as server:
        run = _run(shop, _ftps(server.port, certs))
    assert run.state == "failed"
    assert "PROT P" in str(run.error)
    assert list(server.root.iterdir()) == []


def test_dropped_upload_is_retried_into_one_complete_file(
    shop: Shop, certs: Any, tmp_path: Path
) -> None:
    _customers(shop, 20)
    with ftp_server(tmp_path / "ftp", certs, drops=2) as server:
        run = _run(shop, _ftps(server.port, certs, checksum=False))
    assert run.state == "succeeded", run.error
    assert run.stats is not None and run.stats["retries"] == 2
    assert len(server.stores) == 3  # two dropped attempts, one complete
    files = list(server.root.iterdir())
    assert [p.name for p in files] == [run.file_name]
    data = files[0].read_bytes()
    assert hashlib.sha256(data).hexdigest() == run.checksum
    assert len(_rows(data)) == 21


def test_retries_exhausted_fail_the_run(
    engine: Any, db_url: str, certs: Any, tmp_path: Path
) -> None:
    settings = feed_settings(db_url, tmp_path, retries=1)
    from tests.profiles.conftest import Log

    shop = Shop(Log(engine, settings), settings)
    _customers(shop, 2)
    with ftp_server(tmp_path / "ftp", certs, drops=5) as server:
        run = _run(shop, _ftps(server.port, certs))
    assert run.state == "failed"
    assert "FTP transfer failed" in str(run.error) or "failed" in str(run.error)
    assert not [p for p in server.root.iterdir() if not p.name.startswith(".")]


# SFTP -------------------------------------------------------------------------------------


def _sftp(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "sftp",
        "host": "127.0.0.1",
        "port": port,
        "user": FTP_USER,
        "directory": "/inbox",
        "checksum": True,
        **extra,
    }


def test_sftp_known_hosts_and_password(shop: Shop, tmp_path: Path) -> None:
    _customers(shop, 3)
    with sftp_server(tmp_path / "sftp") as server:
        (server.root / "inbox").mkdir()
        known = server.known_hosts(tmp_path)
        run = _run(shop, _sftp(server.port, known_hosts=str(known), password_secret="sftp-pass"))
    assert run.state == "succeeded", run.error
    names = sorted(p.name for p in (server.root / "inbox").iterdir())
    assert names == [str(run.file_name), f"{run.file_name}.sha256"]
    data = (server.root / "inbox" / str(run.file_name)).read_bytes()
    assert hashlib.sha256(data).hexdigest() == run.checksum
    assert len(_rows(data)) == 4


def test_sftp_pinned_fingerprint_and_key(engine: Any, db_url: str, tmp_path: Path) -> None:
    with sftp_server(tmp_path / "sftp") as server:
        (server.root / "inbox").mkdir()
        key = server.client_key.export_private_key().decode()
        settings = feed_settings(db_url, tmp_path)
        secrets = {**settings.feeds.secrets, "sftp-key": SecretStr(key)}
        settings = settings.model_copy(
            update={"feeds": settings.feeds.model_copy(update={"secrets": secrets})}
        )
        from tests.profiles.conftest import Log

        shop = Shop(Log(engine, settings), settings)
        _customers(shop, 2)
        run = _run(shop, _sftp(server.port, fingerprint=server.fingerprint, key_secret="sftp-key"))
        assert run.state == "succeeded", run.error
        assert (server.root / "inbox" / str(run.file_name)).exists()


def test_sftp_unknown_host_key_refused(shop: Shop, tmp_path: Path) -> None:
    _customers(shop, 1)
    with sftp_server(tmp_path / "sftp") as server, sftp_server(tmp_path / "other") as other:
        (server.root / "inbox").mkdir()
        # a known_hosts file with another server's key, and a pin of another key
        known = other.known_hosts(tmp_path)
        known.write_text(known.read_text().replace(f":{other.port}]", f":{server.port}]"))
        by_file = _run(
            shop, _sftp(server.port, known_hosts=str(known), password_secret="sftp-pass")
        )
        by_pin = _run(
            shop, _sftp(server.port, fingerprint=other.fingerprint, password_secret="sftp-pass")
        )
        assert list((server.root / "inbox").iterdir()) == []
    for run in (by_file, by_pin):
        assert run.state == "failed"
        assert "host key" in str(run.error) and "refused" in str(run.error)


def test_sftp_wrong_password(shop: Shop, tmp_path: Path) -> None:
    _customers(shop, 1)
    with sftp_server(tmp_path / "sftp") as server:
        (server.root / "inbox").mkdir()
        run = _run(
            shop, _sftp(server.port, fingerprint=server.fingerprint, password_secret="ftp-pass")
        )
    assert run.state == "failed"
    assert "refused the login" in str(run.error)
    assert "s3cret" not in str(run.error)


# Webhook ----------------------------------------------------------------------------------


def _hook(url: str, certs: Any, **extra: Any) -> dict[str, Any]:
    return {
        "type": "webhook",
        "url": url,
        "signing_secret": "hook",
        "ca_file": str(certs.ca_file),
        **extra,
    }


def test_webhook_signed_batches(shop: Shop, certs: Any) -> None:
    _customers(shop, 5)
    with https_receiver(certs) as receiver:
        run = _run(shop, _hook(receiver.url, certs, batch_rows=2))
    assert run.state == "succeeded", run.error
    assert len(receiver.requests) == 3
    rows: list[dict[str, Any]] = []
    for number, (headers, body) in enumerate(receiver.requests, start=1):
        timestamp, mac = (
            part.split("=", 1)[1] for part in headers["x-closedloop-signature"].split(",")
        )
        expected = hmac.new(
            b"hook-key", f"{timestamp}.".encode() + body, hashlib.sha256
        ).hexdigest()
        assert hmac.compare_digest(mac, expected)
        assert headers["idempotency-key"] == f"{run.id}-{number}"
        document = orjson.loads(body)
        assert document["batch"] == number and document["batches"] == 3
        assert document["last"] is (number == 3)
        rows.extend(document["rows"])
    assert len(rows) == 5
    assert set(rows[0]) == {"customer_key", "salutation", "last_name", "postal_code", "phone"}
    assert rows[0]["postal_code"] == "01067"


def test_webhook_5xx_retried_4xx_and_redirect_fail(shop: Shop, certs: Any) -> None:
    _customers(shop, 2)
    with https_receiver(certs) as receiver:
        receiver.statuses.extend([503, 500])
        retried = _run(shop, _hook(receiver.url, certs))
        receiver.statuses.append(400)
        refused = _run(shop, _hook(receiver.url, certs))
    assert retried.state == "succeeded" and retried.stats is not None
    assert retried.stats["retries"] == 2
    assert refused.state == "failed" and "answered 400" in str(refused.error)
    with https_receiver(certs, redirect="https://169.254.169.254/latest") as receiver:
        redirected = _run(shop, _hook(receiver.url, certs))
    assert redirected.state == "failed"
    assert "redirects are not followed" in str(redirected.error)
    assert len(receiver.requests) == 1


def test_webhook_certificate_must_verify(shop: Shop, certs: Any) -> None:
    _customers(shop, 1)
    with https_receiver(certs) as receiver:
        run = _run(shop, {"type": "webhook", "url": receiver.url, "signing_secret": "hook"})
    assert run.state == "failed"
    assert "certificate" in str(run.error)
    assert receiver.requests == []


def test_missing_secret_named_not_printed(shop: Shop, certs: Any) -> None:
    _customers(shop, 1)
    run = _run(shop, _hook("https://127.0.0.1:9/x", certs, signing_secret="nope"))
    assert run.state == "failed"
    assert "secret `nope` is not set" in str(run.error)


# Outbound safety --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.10",
        "169.254.169.254",
        "::ffff:127.0.0.1",
        "::1",
        "localhost",
        "0.0.0.0",
    ],
)
def test_private_and_local_hosts_refused(host: str, db_url: str, tmp_path: Path) -> None:
    settings = feed_settings(db_url, tmp_path).model_copy(
        update={
            "feeds": feed_settings(db_url, tmp_path).feeds.model_copy(update={"allowed_hosts": ()})
        }
    )
    with pytest.raises(DeliveryError) as caught:
        check_host(host, 21, settings)
    assert caught.value.transient is False
    assert "refused" in caught.value.message


def test_allowed_hosts_by_name_and_network(db_url: str, tmp_path: Path) -> None:
    base = feed_settings(db_url, tmp_path)
    by_network = base.model_copy(
        update={"feeds": base.feeds.model_copy(update={"allowed_hosts": ("10.0.0.0/8",)})}
    )
    assert check_host("10.1.2.3", 21, by_network) == ["10.1.2.3"]
    with pytest.raises(DeliveryError):
        check_host("192.168.1.1", 21, by_network)


def test_private_destination_fails_the_run(
    shop: Shop, certs: Any, db_url: str, tmp_path: Path
) -> None:
    settings: Settings = shop.settings.model_copy(
        update={"feeds": shop.settings.feeds.model_copy(update={"allowed_hosts": ()})}
    )
    _customers(shop, 1)
    feeds.save_feed(
        shop.log.engine,
        gold_feed(destination=_ftps(2121, certs) | {"host": "169.254.169.254"}),
        create=None,
    )
    run = feeds.run_now(shop.log.engine, settings, "gold")
    assert run.state == "failed"
    assert "169.254.169.254" in str(run.error) and "refused" in str(run.error)


def test_ftps_definition_never_holds_the_password() -> None:
    with pytest.raises(ValidationError, match="the secret itself"):
        FtpsDestination.model_validate(
            {"host": "x.example", "user": "u", "password_secret": "pass word!", "type": "ftps"}
        )


def test_webhook_timeout_is_retried_then_fails(engine: Any, db_url: str, tmp_path: Path) -> None:
    import socket

    settings = feed_settings(db_url, tmp_path, timeout_seconds=0.3, retries=1)
    from tests.profiles.conftest import Log

    shop = Shop(Log(engine, settings), settings)
    _customers(shop, 1)
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    port = silent.getsockname()[1]
    try:
        hook = {"type": "webhook", "url": f"https://127.0.0.1:{port}/x", "signing_secret": "hook"}
        run = _run(shop, hook)
    finally:
        silent.close()
    assert run.state == "failed"
    assert "Timeout" in str(run.error)


def test_secrets_file_and_nothing_secret_in_logs(
    engine: Any, db_url: str, certs: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secrets_file = tmp_path / "secrets.yaml"
    secrets_file.write_text("ftp-pass: from-the-file\n")
    settings = feed_settings(db_url, tmp_path, secrets_file=secrets_file)
    from tests.profiles.conftest import Log

    shop = Shop(Log(engine, settings), settings)
    _customers(shop, 1)
    with ftp_server(tmp_path / "ftp", certs) as server:
        refused = _run(shop, _ftps(server.port, certs))  # the file's value wins: wrong password
        secrets_file.write_text("ftp-pass: s3cret-ftp\n")
        accepted = _run(shop, _ftps(server.port, certs))
    assert refused.state == "failed" and "refused" in str(refused.error)
    assert accepted.state == "succeeded", accepted.error
    stored = feeds.get_feed(shop.log.engine, "gold").as_json()
    for text in (caplog.text, str(refused.as_json()), str(stored)):
        assert "from-the-file" not in text and "s3cret-ftp" not in text
