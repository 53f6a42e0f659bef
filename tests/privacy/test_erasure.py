"""Erasure on both backends: one person seeded into every table through the API, erased,
then both databases dumped: nothing of hers is left, the other customer is untouched; her
events replayed and new ones re-create nothing; the next delta feed tells the CRM."""

from __future__ import annotations

import base64
import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from closedloop import clock, feeds, ingest, privacy, profiles, segments, surveys
from closedloop.config import ProcessorSettings, Settings, SurveySettings
from closedloop.identity._tables import identities
from closedloop.ingest._tables import events
from closedloop.privacy import registry
from closedloop.profiles._tables import profiles as profiles_table
from closedloop.web import create_app
from tests.feeds.conftest import feed_settings

ALWAYS = {
    "start": "00:00",
    "end": "23:59",
    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
}
ANNA_USER = "anna-4711"
ANNA_ANON = ["anon-anna-laptop", "anon-anna-phone"]
ANNA_EMAIL = "Anna.Schmidt@Example.DE"
ANNA_PHONE = "0351 1234567"


def _settings(db_url: str, tmp_path: Path) -> Settings:
    base = feed_settings(db_url, tmp_path)
    return base.model_copy(
        update={
            "surveys": SurveySettings(outbox_dir=tmp_path / "outbox", backoff_seconds=0),
            "processor": ProcessorSettings(embedded=False),
        }
    )


@pytest.fixture(autouse=True)
def _reset_clock() -> Iterator[None]:
    yield
    clock.set_clock(None)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def _person(user: str, anons: list[str], email: str, phone: str, last: str) -> list[dict[str, Any]]:
    ts = "2026-11-20T10:00:00Z"
    return [
        {
            "type": "page",
            "anonymousId": anons[0],
            "name": "Laufschuhe",
            "timestamp": ts,
            "properties": {"path": "/laufschuhe"},
        },
        {
            "type": "track",
            "anonymousId": anons[1],
            "event": "Article Rated",
            "properties": {"rating": 5},
            "timestamp": ts,
        },
        {
            "type": "identify",
            "userId": user,
            "anonymousId": anons[0],
            "timestamp": ts,
            "traits": {
                "email": email,
                "phone": phone,
                "firstName": "Anna",
                "lastName": last,
                "gender": "w",
                "createdAt": "2026-11-20",
                "address": {"street": "Hauptstr. 1", "postalCode": "01067", "city": "Dresden"},
                "consent": {"surveys": True, "crm_sync": True},
            },
        },
        {"type": "alias", "previousId": anons[1], "userId": user, "timestamp": ts},
        {
            "type": "track",
            "userId": user,
            "event": "Order Completed",
            "properties": {"revenue": 99.5},
            "timestamp": ts,
        },
        {
            "type": "track",
            "userId": user,
            "event": "Bad",
            "timestamp": "yesterday",
            "traits": {"email": email},
        },  # fails: kept in failed_events
    ]


def _dump(engine: Engine) -> dict[str, list[str]]:
    """Every row of every table as text, by table (a `pg_dump` / `.dump` in effect)."""
    out: dict[str, list[str]] = {}
    inspector = sa.inspect(engine)
    with engine.connect() as conn:
        for name in inspector.get_table_names():
            # names from the store itself; no reflection (it warns on expression indexes)
            rows = conn.exec_driver_sql(f'SELECT * FROM "{name}"')  # noqa: S608
            out[name] = [repr(tuple(row)) for row in rows]
    return out


def _hits(dump: dict[str, list[str]], needles: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for table, rows in dump.items():
        for row in rows:
            low = row.lower()
            for needle in needles:
                if needle.lower() in low:
                    found[f"{table}:{needle}"] = found.get(f"{table}:{needle}", 0) + 1
    return found


def _counts(engine: Engine, pid: str, user: str) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            "events": conn.execute(
                sa.select(sa.func.count()).where(events.c.user_id == user)
            ).scalar_one(),
            "identities": conn.execute(
                sa.select(sa.func.count()).where(identities.c.profile_id == pid)
            ).scalar_one(),
        }


def _members(engine: Engine, segment: str) -> tuple[int, int]:
    """The segment's kept member count and its members counted."""
    with engine.connect() as conn:
        kept = conn.execute(
            sa.text("SELECT members FROM segments WHERE name = :name"), {"name": segment}
        ).scalar_one()
        counted = conn.execute(
            sa.text("SELECT count(*) FROM segment_members WHERE segment = :name"),
            {"name": segment},
        ).scalar_one()
    return int(kept), int(counted)


def test_erasure_reaches_every_table_and_sticks(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    settings = _settings(db_url, tmp_path)
    key = ingest.add_source(engine, "shop-web", kind="web").write_key
    admin = {"Authorization": f"Bearer {settings.admin_token.get_secret_value()}"}  # type: ignore[union-attr]
    anna = _person(ANNA_USER, ANNA_ANON, ANNA_EMAIL, ANNA_PHONE, "Schmidt")
    bob = _person("bob-1", ["anon-bob"] * 2, "bob@example.de", "0341 7654321", "Becker")
    with TestClient(create_app(settings, engine=engine)) as client:
        for person in (anna, bob):
            answer = client.post("/v1/batch", json={"batch": person}, headers=_auth(key))
            assert answer.status_code == 200 and len(answer.json()["failed"]) == 1
        profiles.process_through(engine, settings)
        found = client.get("/v1/profiles", params={"email": ANNA_EMAIL}, headers=admin).json()
        pid = found["items"][0]["id"] if "items" in found else found["id"]
        bob_pid = client.get("/v1/profiles", params={"user_id": "bob-1"}, headers=admin).json()
        bob_pid = bob_pid["items"][0]["id"] if "items" in bob_pid else bob_pid["id"]
        assert (
            client.put(
                f"/v1/profiles/{pid}/consent", json={"marketing": True}, headers=admin
            ).status_code
            == 200
        )
        # segments: membership and its history
        segment = {"name": "dresden", "condition": 'trait address.city = "Dresden"'}
        assert client.post("/v1/segments", json=segment, headers=admin).status_code == 201
        segments.refresh(engine, settings)
        # a delta feed delivers both
        feed = {
            "name": "crm-delta",
            "mode": "delta",
            "source": {"segments": ["dresden"]},
            "columns": [
                {"name": "key", "source": "customer_key"},
                {"name": "email", "source": "masterdata.email"},
                {"name": "phone", "source": "masterdata.phone"},
            ],
            "format": {"type": "csv", "delimiter": ";"},
            "file_name": "crm-{date:%Y%m%d%H%M%S}",
            "destination": {"type": "local", "path": "crm"},
        }
        assert client.post("/v1/feeds", json=feed, headers=admin).status_code == 201
        assert feeds.run_now(engine, settings, "crm-delta").state == "succeeded"
        # a survey: invitation, decision, mail, answer through the rating page
        survey = {"name": "nps", "min_delay_days": 0, "max_delay_days": 30, "window": ALWAYS}
        assert client.post("/v1/surveys", json=survey, headers=admin).status_code == 201
        assert surveys.evaluate(engine, settings) == 2
        clock.set_clock(lambda: datetime.now(UTC) + timedelta(days=1))
        assert surveys.send_due(engine, settings) == 2
        for mail in sorted((tmp_path / "outbox").glob("*.eml")):
            text = mail.read_text()
            link = re.search(r"http://127\.0\.0\.1:8000(/s/[^\s?]+)\?score=9", text)
            assert link is not None
            comment = "Anna hier" if "anna" in text.lower() else "Bob hier"
            posted = client.post(link.group(1), data={"score": "9", "comment": comment})
            assert posted.status_code == 200
        clock.set_clock(None)
        profiles.process_through(engine, settings)
        # a new customer-key version re-keys both (old-to-new pairs are kept)
        rotated = settings.model_copy(
            update={"identity": settings.identity.model_copy(update={"customer_key_version": 2})}
        )
        assert privacy.rotate_customer_keys(engine, rotated, requested_by="test") == 2

        with engine.connect() as conn:
            anna_keys = list(
                conn.execute(
                    sa.select(profiles_table.c.customer_key).where(profiles_table.c.id == pid)
                ).scalars()
            )
        subject_before = None
        with engine.connect() as conn:
            subject_before = registry.subject_of(conn, [pid])
        assert len(subject_before.customer_keys) == 2  # v1 and v2
        needles = [
            ANNA_USER,
            *ANNA_ANON,
            ANNA_EMAIL.lower(),
            "+493511234567",
            ANNA_PHONE,
            *subject_before.customer_keys,
            "Anna hier",
        ]
        before = _hits(_dump(engine), needles)
        seeded = {k.split(":")[0] for k in before}
        assert seeded >= {
            "events",
            "failed_events",
            "identities",
            "identity_merges",
            "profiles",
            "consent_changes",
            "segment_members",
            "segment_changes",
            "feed_rows",
            "survey_invitations",
            "survey_decisions",
            "survey_answers",
            "customer_key_changes",
        } - {
            "identity_merges",
            "consent_changes",
            "segment_members",
            "segment_changes",
            "survey_decisions",
        }  # these hold her profile id, not an identifier
        bob_before = _counts(engine, bob_pid, "bob-1")
        bob_dump = _hits(_dump(engine), ["bob-1", "bob@example.de", "anon-bob"])

        # the export holds every seeded row
        exported = client.get(
            "/v1/privacy/exports", params={"phone": "+49 351 1234567"}, headers=admin
        )
        assert exported.status_code == 200
        tables = exported.json()["tables"]
        for name in (
            "events",
            "failed_events",
            "identities",
            "survey_answers",
            "survey_invitations",
            "segment_members",
            "consent_changes",
            "feed_rows",
            "customer_key_changes",
            "identity_merges",
            "profiles",
        ):
            assert tables[name], name
        assert len(tables["events"]) >= 6  # her own, the consent and the survey answer
        assert all(
            pid in str(r) or ANNA_USER in str(r) or "anon-anna" in str(r) for r in tables["events"]
        )

        members_before = _members(engine, "dresden")
        assert members_before[0] == members_before[1] >= 1
        erased = client.post(
            "/v1/privacy/erasures",
            json={"email": "  ANNA.schmidt@example.de ", "requested_by": "ticket 4711"},
            headers=admin,
        )
        assert erased.status_code == 201, erased.text
        body = erased.json()
        assert body["state"] == "done" and body["counts"]["events"] >= 6
        assert body["counts"]["profiles"] >= 1 and body["counts"]["failed_events"] == 1

        after = _hits(_dump(engine), needles)
        # only the delta feed's reference keeps her key, until its next run tells the CRM
        assert set(after) <= {f"feed_rows:{k}" for k in subject_before.customer_keys}, after
        assert _counts(engine, bob_pid, "bob-1") == bob_before
        # the segment's member count follows her leaving (no change recorded for her)
        assert _members(engine, "dresden") == (members_before[0] - 1,) * 2
        assert _hits(_dump(engine), ["bob-1", "bob@example.de", "anon-bob"]) == bob_dump

        clock.set_clock(lambda: datetime.now(UTC) + timedelta(days=2))
        run = feeds.run_now(engine, settings, "crm-delta")
        clock.set_clock(None)
        assert run.state == "succeeded"
        path = Path(settings.feeds.local_dir) / "crm" / str(run.file_name)
        rows = list(csv.DictReader(io.StringIO(path.read_text("utf-8")), delimiter=";"))
        deletes = [r for r in rows if r["action"] == "delete"]
        delivered = next(k for k in subject_before.customer_keys if k.startswith("v1."))
        assert anna_keys[0] == "v2." + delivered[3:]
        assert delivered in [r["key"] for r in deletes]  # the key the CRM has, not the new one
        assert all(r["email"] == "" and r["phone"] == "" for r in deletes)
        # Bob was re-keyed: his old key goes, his new one comes; Anna's new key never
        upserts = [r for r in rows if r["action"] == "upsert"]
        assert [r["email"] for r in upserts] == ["bob@example.de"]
        assert len(deletes) == 2
        assert _hits(_dump(engine), needles) == {}

        # the audit says who asked and what was erased, not who she was
        audit = client.get("/v1/privacy/audit", headers=admin).json()["items"]
        actions = [e["action"] for e in audit]
        assert {"erasure_requested", "erasure_done", "export", "key_rotation"} <= set(actions)
        assert all(n.lower() not in str(audit).lower() for n in needles)
        assert any(e["actor"] == "api: ticket 4711" for e in audit)
        done = next(e for e in audit if e["action"] == "erasure_done")
        assert done["details"]["recipients"] == {"delta_feeds": ["crm-delta"], "forwarded_to": []}

        # replayed and new events carrying her identifiers: 200, dropped, counted
        replay = [m for m in anna if m.get("event") != "Bad"]
        new = [
            {
                "type": "track",
                "anonymousId": "fresh-device",
                "event": "Page Viewed",
                "context": {"traits": {"email": "anna.schmidt@example.de"}},
            },
            {"type": "identify", "userId": "new-login", "traits": {"phone": "+49 351 1234567"}},
            {"type": "track", "userId": ANNA_USER, "event": "Order Completed"},
        ]
        sent = replay + new
        answer = client.post("/v1/batch", json={"batch": sent}, headers=_auth(key))
        assert answer.status_code == 200 and answer.json() == {"success": True}
        one = client.post(
            "/v1/track", json={"userId": ANNA_USER, "event": "Again"}, headers=_auth(key)
        )
        assert one.status_code == 200
        metrics = client.get("/metrics").text
        assert (
            f'closedloop_suppressed_events_total{{where="tracking"}} {len(sent) + 1}.0' in metrics
        )
        profiles.process_through(engine, settings)
        assert _hits(_dump(engine), needles) == {}
        assert find_none(engine, settings)


def find_none(engine: Engine, settings: Settings) -> bool:
    from closedloop.profiles.read import find_profile

    purposes = settings.profiles.consent_purposes
    region = settings.identity.default_region
    for kind, value in (
        ("email", ANNA_EMAIL),
        ("phone", ANNA_PHONE),
        ("user_id", ANNA_USER),
        ("anonymous_id", ANNA_ANON[0]),
    ):
        assert find_profile(engine, kind, value, region=region, purposes=purposes) is None, kind
    return True
