"""Kill `closedloop feeds run` with SIGKILL in the middle of an FTPS upload: the final file
name never appears partial; the next worker takes the run over (same run id, same name)
once the lease has run out, and exactly one complete file results."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy.engine import Engine

from closedloop import clock, feeds
from tests.feeds.conftest import Shop, feed_settings
from tests.feeds.servers import FTP_USER, certificates, ftp_server
from tests.profiles.conftest import Log, identify

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_killed_upload_leaves_no_partial_final_file(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    settings = feed_settings(db_url, tmp_path, lease_seconds=5)
    shop = Shop(Log(engine, settings), settings)
    shop.log.send(
        *[
            identify(
                f"cust-{n}",
                email=f"k{n}@example.de",
                lastName=f"Muster{n}",
                plan="gold",
                consent={"crm_sync": True},
            )
            for n in range(400)
        ]
    )
    shop.log.process()
    certs = certificates(tmp_path)
    padding = [{"name": f"pad{i}", "value": "x" * 600} for i in range(4)]
    slow = {"delay": 0.05}
    with ftp_server(tmp_path / "ftp", certs, slow=slow) as server:
        feeds.save_feed(
            engine,
            {
                "name": "big",
                "columns": [{"name": "key", "source": "customer_key"}, *padding],
                "file_name": "big-{date:%Y%m%d}",
                "destination": {
                    "type": "ftps",
                    "host": "127.0.0.1",
                    "port": server.port,
                    "user": FTP_USER,
                    "password_secret": "ftp-pass",
                    "ca_file": str(certs.ca_file),
                    "checksum": True,
                },
            },
            create=True,
        )
        env = {
            "PATH": os.environ.get("PATH", ""),
            "CLOSEDLOOP_DATABASE_URL": db_url,
            "CLOSEDLOOP_SECRET_KEY": "test-secret-" + "y" * 20,
            "CLOSEDLOOP_FEEDS__ALLOWED_HOSTS": '["127.0.0.1"]',
            "CLOSEDLOOP_FEEDS__SECRETS": orjson.dumps({"ftp-pass": "s3cret-ftp"}).decode(),
            "CLOSEDLOOP_FEEDS__LEASE_SECONDS": "5",
            "CLOSEDLOOP_FEEDS__STAGING_DIR": str(tmp_path / "staging"),
        }
        with (tmp_path / "run.log").open("ab") as errors:
            proc = subprocess.Popen(
                [sys.executable, "-m", "closedloop", "feeds", "run", "big"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the upload is under way
            parts = list(server.root.glob(".big-*.part"))
            if parts and parts[0].stat().st_size > 100_000:
                break
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        (run,) = feeds.list_runs(engine, "big")
        assert run.state == "running"  # the fault fired mid-run
        assert [p.name for p in server.root.iterdir() if not p.name.startswith(".")] == []

        slow["delay"] = 0.0
        assert feeds.execute_due(engine, settings) == []  # its lease still holds
        later = clock.now() + timedelta(seconds=6)
        clock.set_clock(lambda: later)
        try:
            (done,) = feeds.execute_due(engine, settings)
        finally:
            clock.set_clock(None)
    assert done.id == run.id and done.state == "succeeded" and done.attempts == 2
    finals = sorted(p.name for p in server.root.iterdir() if not p.name.startswith("."))
    assert finals == [str(done.file_name), f"{done.file_name}.sha256"]
    data = (server.root / str(done.file_name)).read_bytes()
    assert hashlib.sha256(data).hexdigest() == done.checksum
    assert data.count(b"\r\n") == 401  # header and every customer
    assert list(server.root.glob(".*.part")) == []  # the temporary name was renamed
