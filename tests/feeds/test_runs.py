"""Feed runs on both backends: columns and transforms, consent, full and delta runs (enter,
change, leave, erased), schedules queued once, leases, a crashed run taken over."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from closedloop import clock, feeds
from closedloop.errors import ConflictError, InvalidInputError
from closedloop.feeds._tables import feed_rows, feed_runs
from closedloop.feeds._tables import feeds as feeds_table
from closedloop.profiles._tables import profiles
from tests.feeds.conftest import Shop, gold_feed
from tests.profiles.conftest import identify, track


def _file(shop: Shop, run: feeds.FeedRun, folder: str = "crm") -> list[dict[str, str]]:
    path = Path(shop.settings.feeds.local_dir) / folder / str(run.file_name)
    text = path.read_bytes().decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text), delimiter=";"))


def _save(shop: Shop, document: dict[str, Any]) -> None:
    feeds.save_feed(shop.log.engine, document, create=None)


def _run(shop: Shop, name: str = "gold") -> feeds.FeedRun:
    run = feeds.run_now(shop.log.engine, shop.settings, name)
    assert run.state == "succeeded", run.error
    return run


def test_columns_transforms_and_consent(shop: Shop) -> None:
    shop.customer(1, gender="weiblich")
    shop.customer(2, gender="Herr")
    shop.customer(3, gender="divers")
    shop.customer(4, consent=False)
    shop.customer(5, plan="silver")
    shop.log.send(identify("cust-6", plan="gold", consent={"crm_sync": True}))  # no e-mail
    shop.log.send(track("NPS Answered", "cust-1", properties={"score": 9}))
    shop.log.process()
    _save(
        shop,
        gold_feed(
            columns=[
                {"name": "key", "source": "customer_key"},
                {"name": "anrede", "source": "masterdata.gender", "transforms": ["salutation"]},
                {
                    "name": "title",
                    "source": "masterdata.gender",
                    "transforms": [{"salutation": "en"}],
                },
                {
                    "name": "NAME",
                    "source": "masterdata.last_name",
                    "transforms": ["upper", {"max_length": 6}],
                },
                {
                    "name": "plz",
                    "source": "trait.address.postalCode",
                    "transforms": ["postal_code"],
                },
                {"name": "tel", "source": "trait.phone", "transforms": ["e164"]},
                {"name": "since", "source": "created_at", "transforms": [{"date": "%d.%m.%Y"}]},
                {"name": "nps", "source": "nps.score", "transforms": [{"default": "k.A."}]},
                {"name": "crm", "source": "consent.crm_sync"},
                {"name": "src", "value": "closedloop"},
            ]
        ),
    )
    run = _run(shop)
    rows = _file(shop, run)
    assert run.rows == 3 and len(rows) == 3
    assert run.stats is not None
    assert run.stats["skipped_no_consent"] == 1  # customer 4
    assert run.stats["skipped_no_key"] == 1  # cust-6 has no e-mail, so no customer key
    assert run.stats["truncated_cells"] == 3
    by_name = {r["NAME"]: r for r in rows}
    assert set(by_name) == {"MUSTER"}  # all truncated to six characters
    anreden = sorted(r["anrede"] for r in rows)
    assert anreden == ["", "Frau", "Herr"]
    assert sorted(r["title"] for r in rows) == ["", "Mr", "Ms"]
    assert {r["plz"] for r in rows} == {"01067"}
    assert {r["tel"] for r in rows} == {"+493511234501", "+493511234502", "+493511234503"}
    assert sorted(r["nps"] for r in rows) == ["9", "k.A.", "k.A."]
    assert {r["crm"] for r in rows} == {"granted"}
    assert {r["src"] for r in rows} == {"closedloop"}
    today = clock.now().strftime("%d.%m.%Y")
    assert {r["since"] for r in rows} <= {today, "22.11.2026"}


def test_segment_source_with_segment_column_and_entry(shop: Shop) -> None:
    from closedloop import segments

    for n in range(3):
        shop.customer(n, plan="gold" if n < 2 else "silver")
    segments.save_segment(
        shop.log.engine,
        shop.settings,
        "gold-plan",
        segments.condition_tree('trait plan = "gold"'),
        create=True,
    )
    segments.save_segment(
        shop.log.engine,
        shop.settings,
        "muster0",
        segments.condition_tree('trait lastName = "Muster0"'),
        create=True,
    )
    _save(
        shop,
        gold_feed(
            source={"segments": ["gold-plan", "muster0"]},
            columns=[
                {"name": "key", "source": "customer_key"},
                {"name": "segment", "source": "segments"},
                {
                    "name": "entered",
                    "source": "segment.entered_at",
                    "transforms": [{"date": "%Y-%m-%d"}],
                },
            ],
        ),
    )
    rows = _file(shop, _run(shop))
    assert sorted(r["segment"] for r in rows) == ["gold-plan", "gold-plan|muster0"]
    assert {r["entered"] for r in rows} == {clock.now().strftime("%Y-%m-%d")}


def test_missing_segment_fails_clearly(shop: Shop) -> None:
    from closedloop import segments

    segments.save_segment(
        shop.log.engine,
        shop.settings,
        "temp",
        segments.condition_tree("mood is positive"),
        create=True,
    )
    _save(shop, gold_feed(source={"segments": ["temp"]}))
    segments.delete_segment(shop.log.engine, "temp")
    run = feeds.run_now(shop.log.engine, shop.settings, "gold")
    assert run.state == "failed"
    assert "no segment `temp`" in str(run.error)
    with pytest.raises(InvalidInputError) as caught:
        _save(shop, gold_feed(source={"segments": ["nope"]}))
    assert caught.value.field == "source.segments[0]"


def test_unencodable_character_names_row_and_column(shop: Shop) -> None:
    shop.customer(1)
    shop.customer(2, lastName="Łukasiewicz")
    _save(shop, gold_feed(format={"type": "csv", "delimiter": ";", "encoding": "cp1252"}))
    run = feeds.run_now(shop.log.engine, shop.settings, "gold")
    assert run.state == "failed"
    assert "column `last_name`" in str(run.error) and "U+0141" in str(run.error)
    assert "row 2" in str(run.error) or "row 1" in str(run.error)
    folder = Path(shop.settings.feeds.local_dir) / "crm"
    assert [p.name for p in folder.iterdir()] == []  # nothing half-written left behind
    shop.customer(2, lastName="Müller")  # ü is in cp1252
    run = _run(shop)
    data = (folder / str(run.file_name)).read_bytes()
    assert "Müller".encode("cp1252") in data


def test_jsonl_keeps_types(shop: Shop) -> None:
    import orjson

    shop.customer(1)
    shop.log.send(track("NPS Answered", "cust-1", properties={"score": 10}))
    shop.log.process()
    _save(
        shop,
        gold_feed(
            format={"type": "jsonl"},
            columns=[
                {"name": "key", "source": "customer_key"},
                {"name": "nps", "source": "nps.score"},
                {"name": "events", "source": "computed.events"},
                {"name": "mood", "source": "mood.label"},
                {"name": "score", "source": "mood.score"},
            ],
        ),
    )
    run = _run(shop)
    assert str(run.file_name).endswith(".jsonl")
    path = Path(shop.settings.feeds.local_dir) / "crm" / str(run.file_name)
    (row,) = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert row["nps"] == 10 and row["events"] == 2
    assert row["mood"] == "positive" and row["score"] > 0


def _delta_feed() -> dict[str, Any]:
    return gold_feed(
        mode="delta",
        columns=[
            {"name": "key", "source": "customer_key"},
            {"name": "last_name", "source": "masterdata.last_name"},
            {"name": "city", "source": "masterdata.city"},
        ],
    )


def test_delta_enter_change_leave_and_erased(shop: Shop) -> None:
    for n in range(4):
        shop.customer(n)
    _save(shop, _delta_feed())
    first = _run(shop)
    rows = _file(shop, first)
    assert first.stats is not None and first.stats["entered"] == 4
    assert {r["action"] for r in rows} == {"upsert"} and len(rows) == 4
    keys = {r["last_name"]: r["key"] for r in rows}

    # nothing happened: an empty delta
    clock.set_clock(lambda: datetime.now(UTC) + timedelta(days=1))
    try:
        quiet = _run(shop)
        assert _file(shop, quiet) == []
        assert quiet.stats is not None and quiet.stats["unchanged"] == 4

        shop.customer(
            1, address={"street": "Neue Str. 1", "postalCode": "01069", "city": "Leipzig"}
        )
        shop.customer(2, plan="silver")  # leaves the condition
        shop.customer(9)  # enters
        with shop.log.engine.begin() as conn:  # customer 3 is erased (the privacy job's effect)
            pid = shop.log.profile_of("user_id", "cust-3")
            conn.execute(profiles.delete().where(profiles.c.id == pid))
        clock.set_clock(lambda: datetime.now(UTC) + timedelta(days=2))
        second = _run(shop)
    finally:
        clock.set_clock(None)
    rows = _file(shop, second)
    actions = {(r["action"], r["last_name"] or r["key"]) for r in rows}
    assert len(rows) == 4
    assert actions == {
        ("delete", keys["Muster2"]),
        ("delete", keys["Muster3"]),
        ("upsert", "Muster1"),
        ("upsert", "Muster9"),
    }
    deletes = [r for r in rows if r["action"] == "delete"]
    assert all(r["last_name"] == "" and r["city"] == "" for r in deletes)  # only the key
    assert second.stats is not None
    assert (second.stats["entered"], second.stats["changed"], second.stats["left"]) == (1, 1, 2)
    assert second.file_name != first.file_name  # a new day, a new file
    with shop.log.engine.connect() as conn:
        kept = conn.execute(sa.select(feed_rows.c.run_id).distinct()).scalars().all()
    assert kept == [second.id]  # only the last delivered run is the reference


def test_delta_consent_withdrawn_is_a_delete(shop: Shop) -> None:
    shop.customer(1)
    shop.customer(2)
    _save(shop, _delta_feed())
    first = _run(shop)
    keys = {r["last_name"]: r["key"] for r in _file(shop, first)}
    shop.customer(2, consent=False)
    second = _run(shop)
    assert [(r["action"], r["key"]) for r in _file(shop, second)] == [("delete", keys["Muster2"])]


def test_failed_delta_run_is_not_the_reference(shop: Shop) -> None:
    shop.customer(1)
    _save(shop, _delta_feed())
    _run(shop)
    shop.customer(2)
    _save(
        shop,
        _delta_feed()
        | {
            "destination": {
                "type": "webhook",
                "url": "https://10.0.0.1/x",
                "signing_secret": "hook",
            }
        },
    )
    failed = feeds.run_now(shop.log.engine, shop.settings, "gold")
    assert failed.state == "failed"
    _save(shop, _delta_feed())
    again = _run(shop)
    rows = _file(shop, again)
    assert [(r["action"], r["last_name"]) for r in rows] == [("upsert", "Muster2")]


def test_schedule_queues_each_firing_once(shop: Shop) -> None:
    engine = shop.log.engine
    for shipped in feeds.SHIPPED_FEEDS:
        feeds.delete_feed(engine, shipped["name"])
    _save(shop, gold_feed(schedule={"cron": "0 2 * * *", "timezone": "Europe/Berlin"}))
    start = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert feeds.schedule_due(engine, now=start) == 0  # the first pass sets the next firing
    gold = feeds.get_feed(engine, "gold")
    assert gold.next_run_at == datetime(2026, 11, 24, 1, 0, tzinfo=UTC)  # 02:00 in Berlin
    assert feeds.schedule_due(engine, now=start + timedelta(hours=2)) == 0
    due = datetime(2026, 11, 24, 1, 0, 30, tzinfo=UTC)
    assert feeds.schedule_due(engine, now=due) == 1
    assert feeds.schedule_due(engine, now=due) == 0  # a second worker finds nothing
    # the hub was down for three days: one run, not three
    assert feeds.schedule_due(engine, now=due + timedelta(days=3)) == 1
    with engine.connect() as conn:
        runs = conn.execute(
            sa.select(feed_runs.c.trigger, feed_runs.c.scheduled_for).where(
                feed_runs.c.feed == "gold"
            )
        ).all()
    assert [r.trigger for r in runs] == ["schedule", "schedule"]
    assert feeds.get_feed(engine, "gold").next_run_at == datetime(2026, 11, 28, 1, 0, tzinfo=UTC)


def test_scheduled_run_file_named_by_business_date(shop: Shop) -> None:
    shop.customer(1)
    engine = shop.log.engine
    for shipped in feeds.SHIPPED_FEEDS:
        feeds.delete_feed(engine, shipped["name"])
    _save(shop, gold_feed(schedule={"cron": "30 23 * * *", "timezone": "Europe/Berlin"}))
    feeds.schedule_due(engine, now=datetime(2026, 11, 23, 12, 0, tzinfo=UTC))
    assert feeds.schedule_due(engine, now=datetime(2026, 11, 23, 22, 31, tzinfo=UTC)) == 1
    (run,) = feeds.execute_due(engine, shop.settings)
    assert run.state == "succeeded"
    assert run.file_name == "gold-20261123.csv"  # 23:30 in Berlin, 22:30 UTC


def test_lease_keeps_a_second_worker_out(shop: Shop) -> None:
    shop.customer(1)
    engine = shop.log.engine
    _save(shop, gold_feed())
    with engine.begin() as conn:  # another worker runs the feed now
        conn.execute(
            feeds_table.update()
            .where(feeds_table.c.name == "gold")
            .values(lease_token="other", lease_until=clock.now() + timedelta(minutes=5))
        )
    with pytest.raises(ConflictError, match="running in another worker"):
        feeds.run_now(engine, shop.settings, "gold")
    queued = feeds.queue_run(engine, "gold")
    assert feeds.execute_due(engine, shop.settings) == []
    assert feeds.get_run(engine, "gold", queued.id).state == "queued"


def test_crashed_run_is_taken_over_with_its_id_and_file_name(shop: Shop) -> None:
    shop.customer(1)
    engine = shop.log.engine
    _save(shop, gold_feed())
    run = feeds.queue_run(engine, "gold")
    crash_at = clock.now()
    with engine.begin() as conn:  # a worker took it and died: lease running out, partial file
        conn.execute(
            feeds_table.update()
            .where(feeds_table.c.name == "gold")
            .values(lease_token="dead", lease_until=crash_at + timedelta(seconds=300))
        )
        conn.execute(
            feed_runs.update().where(feed_runs.c.id == run.id).values(state="running", attempts=1)
        )
    folder = Path(shop.settings.feeds.local_dir) / "crm"
    folder.mkdir(parents=True)
    (folder / f".gold.{run.id}.part").write_text("customer_key;sal")
    assert feeds.execute_due(engine, shop.settings) == []  # the lease still holds
    clock.set_clock(lambda: crash_at + timedelta(seconds=301))
    try:
        (done,) = feeds.execute_due(engine, shop.settings)
    finally:
        clock.set_clock(None)
    assert done.id == run.id and done.state == "succeeded" and done.attempts == 2
    assert sorted(p.name for p in folder.iterdir()) == [
        str(done.file_name),
        f"{done.file_name}.sha256",
    ]
    assert len(_file(shop, done)) == 1


def test_run_that_died_three_times_gives_up(shop: Shop) -> None:
    engine = shop.log.engine
    _save(shop, gold_feed())
    run = feeds.queue_run(engine, "gold")
    with engine.begin() as conn:
        conn.execute(
            feed_runs.update().where(feed_runs.c.id == run.id).values(state="running", attempts=3)
        )
    assert feeds.execute_due(engine, shop.settings) == []
    found = feeds.get_run(engine, "gold", run.id)
    assert found.state == "failed" and "gave up after 3 attempts" in str(found.error)


def test_preview_writes_nothing(shop: Shop) -> None:
    shop.customer(1)
    shop.customer(2, consent=False)
    _save(shop, gold_feed())
    found = feeds.preview(shop.log.engine, shop.settings, "gold", rows=5)
    assert found.columns[0] == "customer_key"
    assert len(found.rows) == 1 and found.rows[0][3] == "01067"
    assert found.stats["skipped_no_consent"] == 1
    assert not (Path(shop.settings.feeds.local_dir) / "crm").exists()
    assert feeds.list_runs(shop.log.engine, "gold") == []


def test_shipped_feeds_run(shop: Shop) -> None:
    for n in range(3):
        shop.customer(n)
    shop.log.send(track("NPS Answered", "cust-0", properties={"score": 10}))
    shop.log.send(track("NPS Answered", "cust-1", properties={"score": 0}))
    shop.log.process()
    from closedloop import segments

    segments.refresh(shop.log.engine, shop.settings)
    keys = _run(shop, "mood-keys")
    rows = _file(shop, keys)
    assert sorted(r["segment"] for r in rows) == ["negative", "positive"]
    master = _run(shop, "crm-masterdata")
    rows = _file(shop, master)
    assert len(rows) == 3
    assert list(rows[0]) == [
        "action", "customer_key", "salutation", "first_name", "last_name", "street",
        "postal_code", "city", "email", "phone", "mood", "nps",
    ]  # fmt: skip
    by_nps = {r["nps"]: r for r in rows}
    assert by_nps["10"]["mood"] == "positive" and by_nps["0"]["mood"] == "negative"
    assert {r["postal_code"] for r in rows} == {"01067"}
    assert {r["salutation"] for r in rows} == {"Frau"}
    raw = (Path(shop.settings.feeds.local_dir) / "crm" / str(master.file_name)).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # utf-8 with BOM for spreadsheets


@pytest.mark.parametrize(
    "source", [{"condition": 'trait plan = "gold"'}, {"segments": ["gold-plan", "all"]}]
)
def test_fast_and_general_paths_give_the_same_rows(shop: Shop, source: dict[str, Any]) -> None:
    from closedloop import segments
    from closedloop.feeds.rows import RowStats, feed_rows

    for n in range(12):
        shop.customer(
            n,
            consent=n % 5 != 0,
            gender=("w", "m", "x", "Frau")[n % 4],
            plan="gold" if n % 3 else "silver",
            lastName=("=cmd|' /C calc'!A0", "Müller", "'quoted", "+49 30 1")[n % 4],
            address={
                "street": f"Weg {n}",
                "postalCode": "1067" if n % 2 else "80331",
                "city": "Ort",
            },
        )
    shop.log.send(identify("anon-gold", plan="gold", consent={"crm_sync": True}))  # no key
    shop.log.process()
    segments.save_segment(
        shop.log.engine,
        shop.settings,
        "gold-plan",
        segments.condition_tree('trait plan = "gold"'),
        create=True,
    )
    segments.save_segment(
        shop.log.engine,
        shop.settings,
        "all",
        segments.condition_tree("trait plan is present"),
        create=True,
    )
    definition = feeds.parse_feed(
        gold_feed(
            source=source,
            columns=[
                {"name": "key", "source": "customer_key"},
                {"name": "id", "source": "profile_id"},
                {"name": "anrede", "source": "masterdata.gender", "transforms": ["salutation"]},
                {
                    "name": "name",
                    "source": "masterdata.last_name",
                    "transforms": ["upper", {"max_length": 8}],
                },
                {
                    "name": "plz",
                    "source": "masterdata.postal_code",
                    "transforms": [{"postal_code": "DE"}],
                },
                {"name": "tel", "source": "masterdata.phone", "transforms": [{"default": "-"}]},
                {"name": "const", "value": "x"},
            ],
        )
    )
    from closedloop.feeds.rows import _fast_fields

    assert _fast_fields(definition) is not None
    found = []
    for fast in (True, False):
        stats = RowStats()
        with shop.log.engine.connect() as conn:
            rows = list(
                feed_rows(conn, definition, shop.settings, now=clock.now(), stats=stats, fast=fast)
            )
        found.append(([(r.profile_id, r.key, r.cells) for r in rows], stats.as_json()))
    assert found[0] == found[1]
    rows, stats = found[0]
    assert stats["skipped_no_consent"] > 0 and stats["skipped_no_key"] == 1
    assert len(rows) == stats["selected"] - stats["skipped_no_consent"] - stats["skipped_no_key"]


def test_a_feed_of_many_partitions_writes_what_the_row_by_row_path_writes(shop: Shop) -> None:
    """More rows than one read of the driver (2,000): the columnar path (the driver's rows
    after the first batch, cells joined a column at a time, formulas neutralised per column)
    writes the bytes the general path writes row by row through the csv module."""
    from closedloop.feeds.formats import open_writer
    from closedloop.feeds.rows import RowStats, column_names, feed_rows
    from closedloop.feeds.runs import _definition

    messages = []
    for n in range(4_600):
        traits: dict[str, Any] = {
            "email": f"kunde{n}@example.de",
            "firstName": f"Erika{n}",
            "lastName": "=HYPERLINK(1)" if n == 3_333 else f"Muster{n}",
            "gender": ("w", "m", "d", None)[n % 4],
            "phone": f"0351 12{n:05d}",
            "address": {
                "postalCode": 1067 + n % 3,
                "city": "Dresden;Neustadt" if n == 4_444 else "Dresden",
            },
            "consent": {"crm_sync": n % 7 != 0},
        }
        if n == 2_222:
            traits["address"]["city"] = None
        messages.append(identify(f"cust-{n}", **traits))
    shop.log.send(*messages)
    shop.log.process()
    _save(
        shop,
        gold_feed(
            source={"condition": "consent crm_sync or not consent crm_sync"},
            columns=[
                {"name": "key", "source": "customer_key"},
                {"name": "anrede", "source": "masterdata.gender", "transforms": ["salutation"]},
                {"name": "vorname", "source": "masterdata.first_name"},
                {"name": "nachname", "source": "masterdata.last_name"},
                {"name": "plz", "source": "masterdata.postal_code"},
                {"name": "ort", "source": "masterdata.city"},
                {"name": "tel", "source": "masterdata.phone"},
                {"name": "quelle", "value": "closedloop"},
            ],
        ),
    )
    run = _run(shop)
    written = (Path(shop.settings.feeds.local_dir) / "crm" / str(run.file_name)).read_bytes()
    engine = shop.log.engine
    with engine.connect() as conn:
        definition = _definition(conn, "gold")
        stats = RowStats()
        general = feed_rows(
            conn, definition, shop.settings, now=clock.now(), stats=stats, fast=False
        )
        rows = [r.cells for r in general]
    out = io.BytesIO()
    open_writer(out, definition.format, column_names(definition)).write(rows)
    assert written == out.getvalue()
    assert run.rows == len(rows) == 4_600 - len(range(0, 4_600, 7))
    lines = written.decode().splitlines()
    assert "'=HYPERLINK(1)" in lines[1 + [r[2] for r in rows].index("Erika3333")]
    assert any('"Dresden;Neustadt"' in line for line in lines)
    assert all(";+4935112" in line for line in lines[1:])  # E.164 numbers stay usable


def test_master_data_documents_are_read_field_by_field_whatever_their_shape() -> None:
    """The fast path decodes only the fields a feed needs: a field a document lacks is
    empty, other fields and nested values are skipped or kept as they are, and a document
    that is not an object (or not JSON at all, or missing) gives empty cells instead of
    failing the feed, also for the documents beside it."""
    from closedloop.feeds.rows import _masterdata_columns

    docs: list[bytes | None] = [
        b'{"city": "Dresden", "postal_code": "01067", "email": "a@b", "x": [1, {"y": 2}]}',
        '{"city": "Zürich ☃", "street": null}'.encode(),
        b'{"city": {"nested": true}, "postal_code": 1067}',
    ]
    assert _masterdata_columns(docs, ["city", "postal_code"]) == {
        "city": ["Dresden", "Zürich ☃", {"nested": True}],
        "postal_code": ["01067", None, 1067],
    }
    for odd in (b"null", b"[1, 2]", b'{"city": ', b"\xff\xfe", None):
        assert _masterdata_columns([*docs[:2], odd], ["city", "street"]) == {
            "city": ["Dresden", "Zürich ☃", None],
            "street": [None, None, None],
        }, odd


def test_the_salutation_of_a_whole_column_is_the_salutation_of_each_cell() -> None:
    """The fast path salutes a column at a time (a look-up for the usual genders); cells of
    any other spelling or type get what the cell-by-cell transform gives them."""
    from closedloop.feeds.rows import _SALUTATIONS, _Salutation

    salute = _Salutation(_SALUTATIONS["de"])
    usual = ["female", "male", "diverse", "unknown", None]
    odd = ["Female", "w", "Herr", "", 1, True, 2.5, "männlich"]
    column = salute.column
    assert column(usual) == ["Frau", "Herr", "", "", ""]
    assert column(usual + odd) == [salute(v, None) for v in usual + odd]
    assert column(odd)[:3] == ["Frau", "Frau", "Herr"]
    unhashable = [["female"], {"g": "male"}, "male"]
    assert column(unhashable) == [salute(v, None) for v in unhashable]
    assert column(unhashable)[2] == "Herr"
