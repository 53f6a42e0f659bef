"""Crash: the server is SIGKILLed three times while segment-analytics-python sends 5,000 events.

Afterwards every acknowledged event is stored exactly once, and the test shows that the
kills happened (exit by SIGKILL, new process ids) and that the SDK really retried
(requests carrying `X-Retry-Count`, counted by each server process before it died).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import ingest
from closedloop.ingest._tables import events

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TOTAL = 5000
KILLS = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    def __init__(self, db_url: str, port: int, workdir: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "CLOSEDLOOP_DATABASE_URL": db_url,
            "CLOSEDLOOP_LOG_LEVEL": "warning",
        }
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []
        self.exit_codes: list[int] = []

    def start(self) -> None:
        with (self.workdir / f"server-{len(self.pids)}.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "closedloop",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                cwd=self.workdir,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.pids.append(self.proc.pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not come up")

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        total = 0.0
        for match in re.finditer(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.MULTILINE):
            total += float(match.group(1))
        return total

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.exit_codes.append(self.proc.wait(timeout=10))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


def test_sigkill_three_times_loses_and_duplicates_nothing(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    from segment.analytics import Client

    key = ingest.add_source(engine, "shop-server", kind="server").write_key
    server = ServerProcess(db_url, _free_port(), tmp_path)
    server.start()
    retried_requests = 0.0
    deduplicated = 0.0
    errors: list[Any] = []
    sent_ids: list[str] = []
    client = Client(
        key,
        host=server.url,
        upload_size=100,
        max_retries=10,
        on_error=lambda e, b: errors.append(e),
    )

    def produce() -> None:
        for i in range(TOTAL):
            ok, message = client.track(f"user-{i % 97}", "Order Completed", {"n": i})
            assert ok
            sent_ids.append(message["messageId"])
            if i % 15 == 14:
                time.sleep(0.02)  # pace the load so that the kills land mid-stream

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        for _ in range(KILLS):
            time.sleep(1.2)
            retried_requests += server.metric("closedloop_tracking_client_retries_total")
            deduplicated += server.metric("closedloop_events_deduplicated_total")
            server.kill()
            time.sleep(0.3)  # the server stays down for a moment: the SDK must retry
            server.start()
        producer.join()
        client.flush()
        retried_requests += server.metric("closedloop_tracking_client_retries_total")
        deduplicated += server.metric("closedloop_events_deduplicated_total")
    finally:
        server.stop()

    assert server.exit_codes == [-signal.SIGKILL] * KILLS
    assert len(set(server.pids)) == KILLS + 1
    assert not producer.is_alive()
    assert errors == []  # the SDK gave up on nothing: every event was acknowledged
    assert retried_requests > 0, "the SDK never retried: the kills did not hit a request"
    with engine.connect() as conn:
        rows = conn.execute(sa.select(events.c.message_id)).scalars().all()
    assert len(rows) == TOTAL
    assert set(rows) == set(sent_ids)
    print(f"kills={KILLS} retried_requests={retried_requests} deduplicated={deduplicated}")
