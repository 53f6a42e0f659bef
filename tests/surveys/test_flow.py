"""A survey end to end on both backends: identifies evaluated, invitations mailed to the
outbox and to a real SMTP server (aiosmtpd), the rating pages (GET records nothing, POST
records once, again updates), the answer on the profile and in the stats."""

from __future__ import annotations

import email
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from closedloop import clock, surveys
from closedloop.config import FeedSettings, ProcessorSettings, Settings, SurveySettings
from closedloop.profiles.read import get_profile
from closedloop.web import create_app
from tests.conftest import make_settings
from tests.profiles.conftest import Log, identify

ALWAYS = {
    "start": "00:00",
    "end": "23:59",
    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
}


def _settings(db_url: str, tmp_path: Path, *, allow: bool = True, **survey: Any) -> Settings:
    return make_settings(db_url).model_copy(
        update={
            "surveys": SurveySettings(outbox_dir=tmp_path / "outbox", backoff_seconds=0, **survey),
            "processor": ProcessorSettings(embedded=False),
            # the test SMTP servers listen on loopback, which the outbound guard refuses unless
            # it is allowed
            "feeds": FeedSettings(allowed_hosts=("127.0.0.1",) if allow else ()),
        }
    )


def test_smtp_host_on_a_private_address_is_refused(log: Log, db_url: str, tmp_path: Path) -> None:
    settings = _settings(db_url, tmp_path, allow=False, smtp_host="127.0.0.1", smtp_port=2525)
    engine = log.engine
    surveys.save_survey(engine, {"name": "nps", "window": ALWAYS}, create=True)
    _customer(log, 1)
    assert surveys.evaluate(engine, settings) == 1
    _at(datetime.now(UTC) + timedelta(days=30))
    assert surveys.send_due(engine, settings) == 0
    found = surveys.eligibility(engine, "nps", log.profile_of("user_id", "cust-1") or "")
    (invitation,) = found["invitations"]
    assert invitation["state"] == "failed"
    assert "refused" in invitation["error"] and "ALLOWED_HOSTS" in invitation["error"]


@pytest.fixture
def log(engine: Engine, db_url: str, tmp_path: Path) -> Log:
    return Log(engine, _settings(db_url, tmp_path))


def _customer(log: Log, n: int, *, created: str | None = "2026-11-22", **traits: Any) -> None:
    values: dict[str, Any] = {
        "email": f"kunde{n}@example.de",
        "lastName": f"Muster{n}",
        "consent": {"surveys": True},
        **traits,
    }
    if created is not None:
        values["createdAt"] = created
    log.send(identify(f"cust-{n}", **values))  # at 2026-11-22T10:00Z
    log.process()


def _at(moment: datetime) -> Any:
    clock.set_clock(lambda: moment)


@pytest.fixture(autouse=True)
def _reset_clock() -> Iterator[None]:
    yield
    clock.set_clock(None)


def _mails(folder: Path) -> list[Message]:
    return [email.message_from_bytes(p.read_bytes()) for p in sorted(folder.glob("*.eml"))]


def _links(message: Message) -> list[str]:
    text = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    body = text.get_payload(decode=True).decode()  # type: ignore[union-attr]
    return re.findall(r"http://127\.0\.0\.1:8000(/s/[^\s?]+\?score=\d+)", body)


def test_identify_to_answer_on_the_profile(log: Log, tmp_path: Path) -> None:
    engine, settings = log.engine, log.settings
    surveys.save_survey(
        engine,
        {"name": "nps", "min_delay_days": 3, "max_delay_days": 14, "window": ALWAYS},
        create=True,
    )
    _customer(log, 1)  # created 2026-11-22: due 2026-11-25
    _customer(log, 2, created="2026-10-01")  # 52 days: too old
    _customer(log, 3, consent={"surveys": False})
    _customer(log, 4, created=None, locale="en-GB")  # created on the day of the identify
    assert surveys.evaluate(engine, settings) == 2
    assert surveys.evaluate(engine, settings) == 0  # each identify is decided once
    _at(datetime(2026, 11, 24, 12, tzinfo=UTC))
    assert surveys.send_due(engine, settings) == 0  # not due yet
    _at(datetime(2026, 11, 25, 12, tzinfo=UTC))
    assert surveys.send_due(engine, settings) == 2
    assert surveys.send_due(engine, settings) == 0
    mails = _mails(tmp_path / "outbox")
    assert sorted(m["To"] for m in mails) == ["kunde1@example.de", "kunde4@example.de"]
    by_to = {m["To"]: m for m in mails}
    german, english = by_to["kunde1@example.de"], by_to["kunde4@example.de"]
    assert german["Subject"] == "Ihre Meinung ist uns wichtig"
    assert english["Subject"] == "We would like your opinion"
    assert {p.get_content_type() for p in german.walk()} >= {"text/plain", "text/html"}
    assert german["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    links = _links(german)
    assert len(links) == 11 and links[9].endswith("?score=9")

    pid = log.profile_of("user_id", "cust-1")
    assert pid is not None
    reasons = surveys.eligibility(engine, "nps", log.profile_of("user_id", "cust-2") or "")
    assert reasons["decisions"][0]["reason"].startswith("too old: created 2026-10-01")
    no_consent = surveys.eligibility(engine, "nps", log.profile_of("user_id", "cust-3") or "")
    assert no_consent["decisions"][0]["reason"] == "no consent for `surveys`"

    with TestClient(create_app(settings, engine=engine)) as client:
        for link in links:  # a mail scanner opens every link
            page = client.get(link)
            assert page.status_code == 200 and "<form" in page.text
        assert 'value="9" checked' in client.get(links[9]).text
        assert surveys.stats(engine, "nps")["answered"] == 0
        path = links[0].split("?")[0]
        answered = client.post(path, data={"score": "9", "comment": "Schneller Versand <b>"})
        assert answered.status_code == 200 and "Danke" in answered.text
        again = client.post(path, data={"score": "10", "comment": "Noch besser"})
        assert again.status_code == 200
        assert client.post(path, data={"score": "11"}).status_code == 400
        forged = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
        assert client.get(forged).status_code == 400
        assert client.post(forged, data={"score": "1"}).status_code == 400
        assert client.get("/s/not-a-token").status_code == 400
    found = get_profile(engine, pid, purposes=settings.profiles.consent_purposes)
    document = found.as_json()
    traits = document["traits"]
    assert traits["nps_rating"] == 10 and traits["nps_comment"] == "Noch besser"
    assert traits["nps_date"] == "2026-11-25"
    assert document["computed"]["nps"]["score"] == 10
    # the first answer is the mood signal; the change updates the traits and latest NPS
    assert [s[2] for s in (found.derived or {})["mood"]] == ["nps_survey"]
    stats = surveys.stats(engine, "nps")
    assert (stats["sent"], stats["answered"], stats["n"], stats["nps"]) == (2, 1, 1, 100)
    assert stats["response_rate"] == 0.5
    assert stats["comments"] == [
        {"score": 10, "comment": "Noch besser", "at": stats["comments"][0]["at"]}
    ]


def test_an_identify_on_anothers_device_is_decided_for_its_writer(log: Log) -> None:
    """Berta gives her consent in a form on the family tablet, whose anonymous id is Anna's:
    the processor applies it to Berta (by her e-mail), and the survey engine decides it for
    Berta, not for the tablet's owner."""
    engine, settings = log.engine, log.settings
    surveys.save_survey(engine, {"name": "nps", "window": ALWAYS}, create=True)
    log.send(identify("anna", "family-tablet", email="anna@example.de", createdAt="2026-11-22"))
    log.send(identify("berta", "berta-phone", email="berta@example.de", createdAt="2026-11-22"))
    log.send(identify(None, "family-tablet", email="Berta@Example.de", consent={"surveys": True}))
    log.process()
    surveys.evaluate(engine, settings)
    anna, berta = log.profile_of("user_id", "anna"), log.profile_of("user_id", "berta")
    assert anna and berta

    def decided(profile_id: str) -> list[int]:
        found = surveys.eligibility(engine, "nps", profile_id)["decisions"]
        return sorted(d["event_id"] for d in found)

    form = 3
    assert decided(berta) == [2, form] and decided(anna) == [1]
    newest = surveys.eligibility(engine, "nps", berta)["decisions"][0]
    assert newest["reason"].startswith("interval: last surveyed")  # hers: invited at event 2


def test_interval_through_the_log(log: Log, tmp_path: Path) -> None:
    engine, settings = log.engine, log.settings
    surveys.save_survey(engine, {"name": "nps", "window": ALWAYS}, create=True)
    _customer(log, 1)
    assert surveys.evaluate(engine, settings) == 1
    _customer(log, 1)  # identifies again the same day: within 26 weeks
    assert surveys.evaluate(engine, settings) == 0
    pid = log.profile_of("user_id", "cust-1") or ""
    reasons = [d["reason"] for d in surveys.eligibility(engine, "nps", pid)["decisions"]]
    assert reasons[0].startswith("interval: last surveyed 2026-11-22")


def test_smtp_server_failing_then_recovering(engine: Engine, db_url: str, tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller

    received: list[bytes] = []
    failures = {"left": 1}

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            if failures["left"]:
                failures["left"] -= 1
                return "451 Try again later"
            received.append(envelope.content)
            return "250 OK"

    import ssl

    import trustme

    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    from aiosmtpd.smtp import AuthResult, LoginPassword

    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        if isinstance(data, LoginPassword):
            logins.append((data.login, data.password))
            return AuthResult(success=data.login == b"nps" and data.password == b"smtp-pw")
        return AuthResult(success=False)

    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    controller.start()
    try:
        settings = _settings(
            db_url,
            tmp_path,
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_ca_file=ca_file,
            smtp_user="nps",
            smtp_password="smtp-pw",
        )
        log = Log(engine, settings)
        surveys.save_survey(engine, {"name": "nps", "window": ALWAYS}, create=True)
        _customer(log, 1)
        _at(datetime.now(UTC))
        assert surveys.evaluate(engine, settings) == 1
        assert surveys.send_due(engine, settings) == 0  # 451: queued again
        assert surveys.send_due(engine, settings) == 1
        assert surveys.send_due(engine, settings) == 0
    finally:
        controller.stop()
    assert len(received) == 1
    message = email.message_from_bytes(received[0])
    assert message["To"] == "kunde1@example.de"
    assert {p.get_content_type() for p in message.walk()} >= {"text/plain", "text/html"}
    assert message["Subject"] == "Ihre Meinung ist uns wichtig"  # no locale: German
    assert len(_links(message)) == 11
    assert logins and all(login == (b"nps", b"smtp-pw") for login in logins)


def test_crash_between_send_and_record_sends_at_most_once_more(log: Log, tmp_path: Path) -> None:
    import sqlalchemy as sa

    from closedloop.surveys._tables import survey_invitations

    engine, settings = log.engine, log.settings
    surveys.save_survey(engine, {"name": "nps", "window": ALWAYS}, create=True)
    _customer(log, 1)
    _at(datetime(2026, 11, 23, 12, tzinfo=UTC))
    assert surveys.evaluate(engine, settings) == 1
    with engine.begin() as conn:  # a worker claimed it, sent the mail and died before recording
        conn.execute(
            survey_invitations.update().values(
                state="sending", attempts=1, due_at=datetime(2026, 11, 23, 12, 10, tzinfo=UTC)
            )
        )
    assert surveys.send_due(engine, settings) == 0  # its lease still holds
    _at(datetime(2026, 11, 23, 12, 11, tzinfo=UTC))
    assert surveys.send_due(engine, settings) == 1  # sent again: the one duplicate
    _at(datetime(2026, 11, 23, 13, tzinfo=UTC))
    assert surveys.send_due(engine, settings) == 0
    with engine.connect() as conn:
        row = conn.execute(sa.select(survey_invitations)).one()
    assert (row.state, row.attempts) == ("sent", 2)
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1  # same file name: overwritten


def test_answer_is_forwarded_to_segment_compatible_endpoints(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    import base64
    import http.server
    import json

    from closedloop.config import FeedSettings, ForwardTarget

    received: list[tuple[str, dict[str, Any]]] = []
    statuses = [503]  # the first attempt fails: retried

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            assert self.path == "/v1/identify", self.path  # never the marketing tool
            received.append((self.headers["Authorization"], json.loads(body)))
            self.send_response(statuses.pop(0) if statuses else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/identify"
        base = _settings(db_url, tmp_path)
        settings = base.model_copy(
            update={
                "surveys": base.surveys.model_copy(
                    update={
                        "forward": (
                            ForwardTarget(url=url, write_key_secret="segment"),
                            ForwardTarget(  # she has not consented to marketing: not sent
                                url=url.replace("/v1/", "/marketing/"),
                                write_key_secret="segment",
                                purpose="marketing",
                            ),
                        )
                    }
                ),
                "feeds": FeedSettings(
                    allowed_hosts=("127.0.0.1",),
                    allow_plain_http=True,
                    backoff_seconds=0,
                    secrets={"segment": "wk_forward"},  # type: ignore[dict-item]
                ),
            }
        )
        log = Log(engine, settings)
        surveys.save_survey(engine, {"name": "nps", "window": ALWAYS}, create=True)
        _customer(log, 1)
        _at(datetime(2026, 11, 23, 12, tzinfo=UTC))
        surveys.evaluate(engine, settings)
        surveys.send_due(engine, settings)
        (mail,) = _mails(tmp_path / "outbox")
        token = _links(mail)[0].split("/")[2].split("?")[0]
        surveys.record_answer(engine, settings, token, score=7, comment="ok")
    finally:
        server.shutdown()
        server.server_close()
    assert len(received) == 2  # 503, then accepted
    auth, message = received[-1]
    assert auth == "Basic " + base64.b64encode(b"wk_forward:").decode()
    assert message["type"] == "identify" and message["userId"] == "cust-1"
    assert message["traits"] == {"nps_rating": 7, "nps_comment": "ok", "nps_date": "2026-11-23"}


def test_timing_through_the_tracking_api_with_the_clock_moved(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    from closedloop import ingest, profiles
    from tests.helpers import basic

    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "mail.txt").write_text(
        "Eigene Vorlage: {{ question }}\n{{ links[10][1] }}\n"
    )
    settings = _settings(db_url, tmp_path, templates_dir=tmp_path / "tpl")
    key = ingest.add_source(engine, "shop", kind="web").write_key
    surveys.save_survey(
        engine,
        {"name": "nps", "min_delay_days": 3, "max_delay_days": 14, "window": ALWAYS},
        create=True,
    )
    with TestClient(create_app(settings, engine=engine)) as client:
        for user, created in (("day-1", "2026-11-22"), ("old", "2026-11-03")):
            answer = client.post(
                "/v1/identify",
                json={
                    "userId": user,
                    "timestamp": "2026-11-23T09:00:00Z",
                    "traits": {
                        "email": f"{user}@example.de",
                        "createdAt": created,
                        "consent": {"surveys": True},
                    },
                },
                headers=basic(key),
            )
            assert answer.status_code == 200, answer.text
    profiles.process_through(engine, settings)
    assert surveys.evaluate(engine, settings) == 1  # `old` was created 20 days before
    for day, expected in ((24, 0), (25, 1), (26, 0)):
        _at(datetime(2026, 11, day, 10, tzinfo=UTC))
        assert surveys.send_due(engine, settings) == expected, day
    (mail,) = _mails(tmp_path / "outbox")
    assert mail["To"] == "day-1@example.de"
    text = next(p for p in mail.walk() if p.get_content_type() == "text/plain")
    body = text.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert body.startswith("Eigene Vorlage: Wie wahrscheinlich") and "?score=10" in body


def test_unsubscribe_needs_a_post_and_withdraws_consent(log: Log, tmp_path: Path) -> None:
    engine, settings = log.engine, log.settings
    surveys.save_survey(engine, {"name": "nps", "window": ALWAYS}, create=True)
    _customer(log, 1)
    _at(datetime(2026, 11, 23, 12, tzinfo=UTC))
    surveys.evaluate(engine, settings)
    surveys.send_due(engine, settings)
    (mail,) = _mails(tmp_path / "outbox")
    header = "".join(str(mail["List-Unsubscribe"]).split())  # unfolded
    target = header.strip("<>").replace("http://127.0.0.1:8000", "")
    pid = log.profile_of("user_id", "cust-1") or ""

    def consent() -> Any:
        return get_profile(engine, pid, purposes=settings.profiles.consent_purposes).as_json()[
            "consent"
        ]["surveys"]

    with TestClient(create_app(settings, engine=engine)) as client:
        page = client.get(target)
        assert page.status_code == 200 and 'method="post"' in page.text
        assert consent()["granted"] is True  # a GET (a mail scanner) changes nothing
        done = client.post(target)
        assert done.status_code == 200 and "keine Umfragen mehr" in done.text
    assert consent()["granted"] is False
    log.send(identify("cust-1", email="kunde1@example.de"))  # identifies again
    log.process()
    surveys.evaluate(engine, settings)
    decisions = surveys.eligibility(engine, "nps", pid)["decisions"]
    assert decisions[0]["reason"] == "no consent for `surveys`"


def test_segment_entry_trigger_and_audience(log: Log, tmp_path: Path) -> None:
    from closedloop import segments

    engine, settings = log.engine, log.settings
    segments.save_segment(
        engine, settings, "gold", segments.condition_tree('trait plan = "gold"'), create=True
    )
    surveys.save_survey(
        engine,
        {
            "name": "welcome-gold",
            "trigger": "segment_entry",
            "segment": "gold",
            "audience": 'trait city = "Dresden"',
            "window": ALWAYS,
        },
        create=True,
    )
    surveys.save_survey(
        engine, {"name": "nps", "audience": 'trait city = "Leipzig"', "window": ALWAYS}, create=True
    )
    _customer(log, 1, plan="gold", city="Dresden")
    _customer(log, 2, plan="gold", city="Leipzig")
    _customer(log, 3, plan="silver", city="Dresden")
    # the clock first: the entry time must not depend on when the test runs
    _at(datetime(2026, 11, 23, 12, tzinfo=UTC))
    segments.refresh(engine, settings)
    assert surveys.evaluate(engine, settings) == 2  # 1 entered gold in Dresden; nps for 2
    assert surveys.evaluate(engine, settings) == 0
    p1, p2 = log.profile_of("user_id", "cust-1") or "", log.profile_of("user_id", "cust-2") or ""
    assert surveys.eligibility(engine, "welcome-gold", p1)["decisions"][0]["invited"] is True
    assert surveys.eligibility(engine, "welcome-gold", p2)["decisions"][0]["reason"] == (
        "not in the audience"
    )
    assert surveys.eligibility(engine, "nps", p1)["decisions"][0]["reason"] == "not in the audience"
    assert surveys.send_due(engine, settings) == 2


def test_a_segment_entry_committed_late_still_invites(log: Log) -> None:
    """Two writers record segment changes at once (a refresh in each of two workers, or one
    beside `PUT /v1/segments/...`): on PostgreSQL the one that took the lower ids may commit
    last. The survey engine waits for it instead of reading past it (a reader of `id >
    cursor` skipped that customer's entry for good)."""
    from closedloop import segments
    from closedloop.segments._tables import segment_changes

    engine, settings = log.engine, log.settings
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: id order is commit order")
    segments.save_segment(
        engine, settings, "gold", segments.condition_tree('trait plan = "gold"'), create=True
    )
    surveys.save_survey(
        engine,
        {"name": "welcome-gold", "trigger": "segment_entry", "segment": "gold", "window": ALWAYS},
        create=True,
    )
    _customer(log, 1, plan="silver")
    _customer(log, 2, plan="silver")
    p1, p2 = log.profile_of("user_id", "cust-1") or "", log.profile_of("user_id", "cust-2") or ""
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    _at(now)
    surveys.evaluate(engine, settings)

    def entry(profile_id: str) -> dict[str, Any]:
        return {"segment": "gold", "profile_id": profile_id, "change": "entered", "at": now,
                "reason": "test"}  # fmt: skip

    with engine.connect() as late:
        writing = late.begin()
        late.execute(segment_changes.insert().values(entry(p1)))  # the lower id, not committed
        with engine.begin() as conn:
            conn.execute(segment_changes.insert().values(entry(p2)))
        first = surveys.evaluate(engine, settings)
        writing.commit()
    second = surveys.evaluate(engine, settings)
    assert first + second == 2
    for profile_id in (p1, p2):
        decision = surveys.eligibility(engine, "welcome-gold", profile_id)["decisions"][0]
        assert decision["invited"] is True, decision


def test_expired_link_is_a_clear_410_page(log: Log, tmp_path: Path) -> None:
    engine, settings = log.engine, log.settings
    surveys.save_survey(engine, {"name": "nps", "window": ALWAYS}, create=True)
    _customer(log, 1)
    _at(datetime(2026, 11, 23, 12, tzinfo=UTC))
    surveys.evaluate(engine, settings)
    surveys.send_due(engine, settings)
    (mail,) = _mails(tmp_path / "outbox")
    path = _links(mail)[5].split("?")[0]
    with TestClient(create_app(settings, engine=engine)) as client:
        _at(datetime(2026, 12, 22, 12, tzinfo=UTC))  # 29 days: still open
        assert client.post(path, data={"score": "5"}).status_code == 200
        _at(datetime(2026, 12, 24, 12, tzinfo=UTC))  # 31 days: expired
        page = client.get(path)
        assert page.status_code == 410 and "expired" in page.text
        assert client.post(path, data={"score": "9"}).status_code == 410
    assert surveys.stats(engine, "nps")["distribution"]["5"] == 1


def test_stats_by_segment_as_of_the_answer(log: Log, tmp_path: Path) -> None:
    from closedloop import segments

    engine, settings = log.engine, log.settings
    segments.save_segment(
        engine, settings, "gold", segments.condition_tree('trait plan = "gold"'), create=True
    )
    surveys.save_survey(engine, {"name": "nps", "window": ALWAYS}, create=True)
    _customer(log, 1, plan="gold")
    _customer(log, 2, plan="silver")
    segments.refresh(engine, settings)
    _at(datetime.now(UTC) + timedelta(minutes=1))
    surveys.evaluate(engine, settings)
    surveys.send_due(engine, settings)
    for mail in _mails(tmp_path / "outbox"):
        token = _links(mail)[0].split("/")[2].split("?")[0]
        score = 10 if mail["To"] == "kunde1@example.de" else 2
        surveys.record_answer(engine, settings, token, score=score, comment=None)
    _at(datetime.now(UTC) + timedelta(minutes=2))
    log.send(identify("cust-1", plan="silver"))  # leaves gold after answering
    log.process()
    segments.refresh(engine, settings)
    by_segment = {g["segment"]: g for g in surveys.stats(engine, "nps")["by_segment"]}
    # gold when answering (left it since); the mood segments were entered after the answers
    assert set(by_segment) == {"gold"}
    assert by_segment["gold"]["n"] == 1 and by_segment["gold"]["nps"] == 100
