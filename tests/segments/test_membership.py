"""Saved segments: members with entry times, entries and exits recorded, kept current."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from closedloop import clock, ingest, segments
from closedloop.cli import app
from tests.helpers import basic
from tests.profiles.conftest import Log
from tests.segments.test_sql import _shop


def test_saved_segment_records_entries_and_exits(
    quiet_client: TestClient, source: ingest.NewSourceKey, log: Log, admin_headers: dict[str, str]
) -> None:
    _shop(quiet_client, source, log)
    made = quiet_client.post(
        "/v1/segments",
        json={
            "name": "cancellers",
            "condition": 'visited page "/account/kuendigung*" within 30 days',
        },
        headers=admin_headers,
    )
    assert made.status_code == 201, made.text
    assert made.json()["size"] == 1
    ben = log.profile_of("user_id", "ben")
    members = quiet_client.get("/v1/segments/cancellers/members", headers=admin_headers).json()[
        "items"
    ]
    assert [m["id"] for m in members] == [ben]
    # The window passes: ben exits, with the reason.
    later = clock.now() + timedelta(days=28)
    report = segments.refresh(log.engine, log.settings, now=later, names=["cancellers"])
    assert (report.entered, report.exited) == (0, 1)
    changes = quiet_client.get("/v1/segments/cancellers/changes", headers=admin_headers).json()[
        "items"
    ]
    assert [(c["profile_id"], c["change"]) for c in changes] == [(ben, "exited"), (ben, "entered")]
    assert changes[0]["reason"] == 'visited page "/account/kuendigung*" within 30 days'
    shown = quiet_client.get("/v1/segments/cancellers", headers=admin_headers).json()
    assert shown["size"] == 0
    assert [p["size"] for p in shown["sizes"]] == [1, 0]
    # A new visit: back in.
    visit = {"type": "page", "userId": "ben", "properties": {"path": "/account/kuendigung"}}
    quiet_client.post("/v1/batch", json={"batch": [visit]}, headers=basic(source.write_key))
    log.process()
    assert segments.refresh(log.engine, log.settings, names=["cancellers"]).entered == 1

    changed = quiet_client.put(
        "/v1/segments/cancellers", json={"condition": "mood is positive"}, headers=admin_headers
    )
    assert changed.status_code == 200
    assert changed.json()["condition"] == "mood is positive"
    assert changed.json()["size"] == 2
    assert quiet_client.delete("/v1/segments/cancellers", headers=admin_headers).status_code == 204
    assert quiet_client.get("/v1/segments/cancellers", headers=admin_headers).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field_or_text"),
    [
        (
            "post",
            "/v1/segments",
            {"name": "Bad Name", "condition": "mood is positive"},
            400,
            "name",
        ),
        ("post", "/v1/segments", {"condition": "mood is positive"}, 400, "name"),
        ("post", "/v1/segments", {"name": "x", "condition": "mood is"}, 400, "condition"),
        (
            "post",
            "/v1/segments",
            {"name": "promoters", "condition": "mood is positive"},
            409,
            "exists already",
        ),
        (
            "post",
            "/v1/segments",
            {"name": "loop", "condition": "in segment loop"},
            400,
            "refers to itself",
        ),
        (
            "post",
            "/v1/segments",
            {"name": "x", "condition": "in segment nowhere"},
            400,
            "no segment `nowhere`",
        ),
        ("put", "/v1/segments/nowhere", {"condition": "mood is positive"}, 404, "no segment"),
        ("get", "/v1/segments/nowhere/members", None, 404, "no segment"),
        ("get", "/v1/segments/nowhere/changes", None, 404, "no segment"),
        ("delete", "/v1/segments/nowhere", None, 404, "no segment"),
    ],
)
def test_segment_changes_that_cannot_be_made(
    client: TestClient,
    admin_headers: dict[str, str],
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
    field_or_text: str,
) -> None:
    answer = client.request(method.upper(), path, json=body, headers=admin_headers)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert (
        field_or_text in (error.get("field") or "", error["message"])
        or field_or_text in error["message"]
    )


def test_a_referenced_segment_cannot_be_deleted_and_deleting_records_exits(
    quiet_client: TestClient, source: ingest.NewSourceKey, log: Log, admin_headers: dict[str, str]
) -> None:
    _shop(quiet_client, source, log)
    quiet_client.post(
        "/v1/segments",
        json={"name": "fans", "condition": "in segment promoters"},
        headers=admin_headers,
    )
    refused = quiet_client.delete("/v1/segments/promoters", headers=admin_headers)
    assert refused.status_code == 409
    assert quiet_client.delete("/v1/segments/fans", headers=admin_headers).status_code == 204
    with log.engine.connect() as conn:
        from closedloop.segments._tables import segment_changes

        rows = conn.execute(
            segment_changes.select().where(segment_changes.c.segment == "fans")
        ).all()
    assert [(r.change, r.reason) for r in rows] == [
        ("entered", "segment `fans` saved"),
        ("exited", "segment deleted"),
    ]


def test_membership_follows_new_events_in_the_server(
    client: TestClient, source: ingest.NewSourceKey, admin_headers: dict[str, str]
) -> None:
    """The server's processor and refresher: ack, then membership, without calling anything."""
    made = client.post(
        "/v1/segments",
        json={"name": "sharers", "condition": 'did "Article Shared"'},
        headers=admin_headers,
    )
    assert made.status_code == 201 and made.json()["size"] == 0
    shared = {"type": "track", "event": "Article Shared", "anonymousId": "reader-1"}
    assert client.post("/v1/track", json=shared, headers=basic(source.write_key)).status_code == 200
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if client.get("/v1/segments/sharers", headers=admin_headers).json()["size"] == 1:
            break
        time.sleep(0.1)
    assert client.get("/v1/segments/sharers", headers=admin_headers).json()["size"] == 1


def test_apply_a_segment_file(
    db_url: str, engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLOSEDLOOP_DATABASE_URL", db_url)
    path = tmp_path / "runners.yaml"
    path.write_text(
        "kind: segment\nname: runners\n"
        'condition: did "Product Viewed" with category = "Laufschuhe"\n',
        encoding="utf-8",
    )
    runner = CliRunner()
    first = runner.invoke(app, ["apply", str(path)])
    assert first.exit_code == 0, first.output
    assert "segment `runners` created: 0 members" in first.output
    again = runner.invoke(app, ["apply", str(path)])
    assert "segment `runners` changed" in again.output
    assert segments.get_segment(engine, "runners").condition.startswith('did "Product Viewed"')
    refreshed = runner.invoke(app, ["segments", "refresh"])
    assert refreshed.exit_code == 0 and "6 segments" in refreshed.output


def test_incremental_refresh_agrees_with_a_full_evaluation(
    quiet_client: TestClient, source: ingest.NewSourceKey, log: Log, admin_headers: dict[str, str]
) -> None:
    _shop(quiet_client, source, log)
    for name, condition in (("gold", 'trait plan = "gold"'), ("viewers", 'did "Product Viewed"')):
        made = quiet_client.post(
            "/v1/segments", json={"name": name, "condition": condition}, headers=admin_headers
        )
        assert made.status_code == 201
    segments.refresh(log.engine, log.settings)
    # ben becomes gold, anna leaves gold, a new visitor views a product, emil merges into dora
    later = [
        {"type": "identify", "userId": "ben", "traits": {"plan": "gold"}},
        {"type": "identify", "userId": "anna", "traits": {"plan": "basic"}},
        {"type": "track", "event": "Product Viewed", "anonymousId": "new-visitor"},
        {"type": "identify", "userId": "dora", "anonymousId": "emil"},
    ]
    quiet_client.post("/v1/batch", json={"batch": later}, headers=basic(source.write_key))
    log.process()
    report = segments.refresh(log.engine, log.settings, incremental=True)
    assert report.entered >= 2 and report.exited >= 1
    now = clock.now()
    for saved in segments.list_segments(log.engine):
        stored = {
            m["id"] for m in segments.stored_members(log.engine, saved.name, after=None, limit=1000)
        }
        evaluated = segments.member_ids(log.engine, log.settings, saved.tree, now=now)
        assert stored == evaluated, saved.name
    gold = segments.stored_members(log.engine, "gold", after=None, limit=10)
    assert [m["id"] for m in gold] == [log.profile_of("user_id", "ben")]


def _logged_writes(log: Log) -> list[tuple[int, str]]:
    from closedloop.profiles._tables import profile_writes

    with log.engine.connect() as conn:
        query = sa.select(profile_writes.c.seq, profile_writes.c.profile_id)
        return [tuple(r) for r in conn.execute(query.order_by(*profile_writes.c))]


def test_the_write_log_keeps_what_a_refresh_still_needs(
    quiet_client: TestClient, source: ingest.NewSourceKey, log: Log, admin_headers: dict[str, str]
) -> None:
    """The processor logs each profile it wrote with its batch; a refresh forgets the writes
    every segment has been refreshed past, none while a segment waits for its first refresh,
    and an incremental refresh after that still sees the profiles written since."""
    _shop(quiet_client, source, log)
    assert _logged_writes(log)  # (the shipped segments wait for their first refresh)
    made = quiet_client.post(
        "/v1/segments", json={"name": "gold", "condition": 'trait plan = "gold"'},
        headers=admin_headers,
    )  # fmt: skip
    assert made.status_code == 201
    segments.refresh(log.engine, log.settings)
    assert _logged_writes(log) == []  # every segment refreshed past them
    change = {"type": "identify", "userId": "ben", "traits": {"plan": "gold"}}
    quiet_client.post("/v1/batch", json={"batch": [change]}, headers=basic(source.write_key))
    log.process()
    ben = log.profile_of("user_id", "ben")
    logged = _logged_writes(log)
    assert [pid for _seq, pid in logged] == [ben]
    made = quiet_client.post(
        "/v1/segments", json={"name": "viewers", "condition": 'did "Product Viewed"'},
        headers=admin_headers,
    )  # fmt: skip
    assert made.status_code == 201
    with log.engine.begin() as conn:  # as if `viewers` had not been refreshed yet
        conn.execute(sa.text("UPDATE segments SET refreshed_seq = NULL WHERE name = 'viewers'"))
    report = segments.refresh(log.engine, log.settings, names=["gold"], incremental=True)
    assert report.entered == 1
    assert _logged_writes(log) == logged  # `viewers` waits for its first refresh
    segments.refresh(log.engine, log.settings)
    assert _logged_writes(log) == []
    # with no segment, the scheduled pass forgets them too
    change = {"type": "identify", "userId": "ben", "traits": {"plan": "x"}}
    quiet_client.post("/v1/batch", json={"batch": [change]}, headers=basic(source.write_key))
    log.process()
    for saved in segments.list_segments(log.engine):  # the shipped ones too
        deleted = quiet_client.delete(f"/v1/segments/{saved.name}", headers=admin_headers)
        assert deleted.status_code == 204
    assert _logged_writes(log)
    segments.refresh(log.engine, log.settings, incremental=True)
    assert _logged_writes(log)
    segments.refresh(log.engine, log.settings)
    assert _logged_writes(log) == []


def test_a_full_refresh_in_groups_reads_each_groups_members_once(
    quiet_client: TestClient,
    source: ingest.NewSourceKey,
    log: Log,
    admin_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full refresh evaluates segments in groups and reads a group's stored members in one
    query (one walk of the members' key on SQLite, migration 0020); whatever the grouping,
    every segment ends with the members a full evaluation gives, and its kept size."""
    from closedloop.segments import store as segment_store

    _shop(quiet_client, source, log)
    conditions = {
        "gold": 'trait plan = "gold"',
        "viewers": 'did "Product Viewed"',
        "nobody": 'trait plan = "platinum"',
        "runners": 'did "Product Viewed" with category = "Laufschuhe"',
    }
    for name, condition in conditions.items():
        made = quiet_client.post(
            "/v1/segments", json={"name": name, "condition": condition}, headers=admin_headers
        )
        assert made.status_code == 201
    later = [
        {"type": "identify", "userId": "ben", "traits": {"plan": "gold"}},
        {"type": "identify", "userId": "anna", "traits": {"plan": "basic"}},
        {"type": "track", "event": "Product Viewed", "anonymousId": "new-visitor"},
    ]
    quiet_client.post("/v1/batch", json={"batch": later}, headers=basic(source.write_key))
    log.process()
    reads: list[list[str]] = []
    members_of = segment_store._members_of

    def counted(conn: sa.Connection, names: list[str]) -> dict[str, set[str]]:
        reads.append(names)
        return members_of(conn, names)

    monkeypatch.setattr(segment_store, "_members_of", counted)
    monkeypatch.setattr(segment_store, "_GROUP_SEGMENTS", 2)
    report = segments.refresh(log.engine, log.settings)
    assert report.entered >= 2 and report.exited >= 1
    # alphabetical, two a group, one read each (the shipped segments too)
    every = sorted(s.name for s in segments.list_segments(log.engine))
    assert reads == [every[i : i + 2] for i in range(0, len(every), 2)]
    now = clock.now()
    for saved in segments.list_segments(log.engine):
        # a page at a time, one member a page: the walk in profile order finds each once
        paged: list[str] = []
        while True:
            page = segments.stored_members(
                log.engine, saved.name, after=paged[-1] if paged else None, limit=1
            )
            if not page:
                break
            paged.append(page[0]["id"])
        assert paged == sorted(paged)
        evaluated = segments.member_ids(log.engine, log.settings, saved.tree, now=now)
        assert set(paged) == evaluated, saved.name
        assert saved.size == len(paged), saved.name
    # nothing left to do, whichever way the segments are grouped
    monkeypatch.setattr(segment_store, "_GROUP_SEGMENTS", 50)
    monkeypatch.setattr(segment_store, "_GROUP_MEMBERS", 1)  # (each segment a group of its own)
    reads.clear()
    again = segments.refresh(log.engine, log.settings)
    assert (again.entered, again.exited) == (0, 0)
    assert reads == [[name] for name in every]


def test_refreshes_follow_the_processors_cursor_beside_the_survey_engines(
    quiet_client: TestClient, source: ingest.NewSourceKey, log: Log, admin_headers: dict[str, str]
) -> None:
    """`processor_cursors` holds the survey engine's cursors too (their `seq` stays 0). A
    refresh reads the processor's row by name: read as "the first row", PostgreSQL could
    answer the survey engine's row once the processor's had moved in the heap, and every
    incremental refresh then evaluated the write log's empty range `(0, 0]`."""
    from closedloop.profiles._tables import MAIN_CURSOR, processor_cursors

    with log.engine.begin() as conn:
        conn.execute(
            processor_cursors.insert().values(name="surveys_entries", txid=0, event_id=0, seq=0)
        )
    _shop(quiet_client, source, log)
    made = quiet_client.post(
        "/v1/segments", json={"name": "gold", "condition": 'trait plan = "gold"'},
        headers=admin_headers,
    )  # fmt: skip
    assert made.status_code == 201
    ben = {"type": "identify", "userId": "ben", "traits": {"plan": "gold"}}
    quiet_client.post("/v1/batch", json={"batch": [ben]}, headers=basic(source.write_key))
    log.process()
    report = segments.refresh(log.engine, log.settings, names=["gold"], incremental=True)
    assert report.entered == 1
    with log.engine.connect() as conn:
        main = conn.execute(
            sa.select(processor_cursors.c.seq).where(processor_cursors.c.name == MAIN_CURSOR)
        ).scalar_one()
        refreshed = conn.execute(sa.text("SELECT refreshed_seq FROM segments WHERE name = 'gold'"))
        assert main > 0 and refreshed.scalar_one() == main
