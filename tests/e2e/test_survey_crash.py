"""Kill `closedloop surveys run` with SIGKILL while the SMTP server holds its answer to the
mail: the invitation stays `sending`; after its lease another pass mails it again and records
it. At most one duplicate per crash, no invitation lost."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trustme
from aiosmtpd.controller import Controller
from sqlalchemy.engine import Engine

from closedloop import clock, surveys
from closedloop.config import FeedSettings, SurveySettings
from closedloop.surveys._tables import survey_invitations
from tests.conftest import make_settings
from tests.profiles.conftest import Log, identify

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ALWAYS = {
    "start": "00:00",
    "end": "23:59",
    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
}


def test_killed_while_mailing_sends_at_most_one_duplicate(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    received: list[bytes] = []
    hold = {"seconds": 30.0}

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            received.append(envelope.content)
            await asyncio.sleep(hold["seconds"])  # the sender waits for this answer
            return "250 OK"

    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(
        Handler(), hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True
    )
    controller.start()
    secret = "test-secret-" + "y" * 20
    settings = make_settings(db_url).model_copy(
        update={
            "surveys": SurveySettings(
                smtp_host="127.0.0.1", smtp_port=port, smtp_ca_file=ca_file, backoff_seconds=0
            ),
            "feeds": FeedSettings(allowed_hosts=("127.0.0.1",)),
        }
    )
    try:
        log = Log(engine, settings)
        surveys.save_survey(engine, {"name": "nps", "window": ALWAYS}, create=True)
        log.send(identify("cust-1", email="kunde1@example.de", consent={"surveys": True}))
        log.process()
        assert surveys.evaluate(engine, settings) == 1
        env = {
            "PATH": os.environ.get("PATH", ""),
            "CLOSEDLOOP_DATABASE_URL": db_url,
            "CLOSEDLOOP_SECRET_KEY": secret,
            "CLOSEDLOOP_SURVEYS__SMTP_HOST": "127.0.0.1",
            "CLOSEDLOOP_SURVEYS__SMTP_PORT": str(port),
            "CLOSEDLOOP_SURVEYS__SMTP_CA_FILE": str(ca_file),
            "CLOSEDLOOP_FEEDS__ALLOWED_HOSTS": '["127.0.0.1"]',
        }
        with (tmp_path / "run.log").open("ab") as errors:
            proc = subprocess.Popen(
                [sys.executable, "-m", "closedloop", "surveys", "run"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
        deadline = time.monotonic() + 60
        while not received and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # the mail is out; its record is not
        proc.wait(10)
        assert len(received) == 1
        with engine.connect() as conn:
            (row,) = conn.execute(sa.select(survey_invitations)).all()
        assert row.state == "sending"  # the fault fired between send and record

        hold["seconds"] = 0.0
        assert surveys.send_due(engine, settings) == 0  # the lease still holds
        later = datetime.now(UTC) + timedelta(minutes=11)
        clock.set_clock(lambda: later)
        try:
            assert surveys.send_due(engine, settings) == 1
            assert surveys.send_due(engine, settings) == 0
        finally:
            clock.set_clock(None)
    finally:
        controller.stop()
    assert len(received) == 2  # one duplicate for one crash
    with engine.connect() as conn:
        (row,) = conn.execute(sa.select(survey_invitations)).all()
    assert (row.state, row.attempts) == ("sent", 2)
