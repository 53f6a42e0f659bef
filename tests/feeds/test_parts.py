"""A full feed written by several processes (`feeds.parts`), on both backends: the same file
as one process writes, byte for byte, whatever the source, columns and format; an
unencodable cell named by its row in the whole file; a worker that fails fails the run and
leaves no part behind."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from closedloop import clock, feeds, segments
from closedloop.config import Settings
from closedloop.feeds.definition import CsvFormat
from closedloop.feeds.formats import open_writer
from closedloop.feeds.parts import PartJob, process_count, range_bounds, write_in_parts
from closedloop.feeds.rows import RowStats, _select, feed_columns
from closedloop.feeds.runs import _definition
from closedloop.profiles._tables import profiles
from tests.feeds.conftest import Shop, gold_feed
from tests.helpers import query_plan
from tests.profiles.conftest import identify, track

_COLUMNS = [
    {"name": "key", "source": "customer_key"},
    {"name": "anrede", "source": "masterdata.gender", "transforms": ["salutation"]},
    {"name": "nachname", "source": "masterdata.last_name"},
    {"name": "plz", "source": "masterdata.postal_code"},
    {"name": "ort", "source": "masterdata.city"},
    {"name": "quelle", "value": "closedloop"},
]
_GENERAL = [  # columns that only the general path writes (a record per profile)
    {"name": "key", "source": "customer_key"},
    {"name": "plan", "source": "trait.plan", "transforms": ["upper"]},
    {"name": "mood", "source": "mood.label"},
    {"name": "segmente", "source": "segments"},
    {"name": "kanaele", "source": "computed.channels"},
]


def _customers(shop: Shop, count: int) -> None:
    messages: list[dict[str, Any]] = []
    for n in range(count):
        messages.append(
            identify(
                f"cust-{n}",
                email=f"kunde{n}@example.de",
                firstName=f"Erika{n}",
                lastName="=HYPERLINK(1)" if n == 17 else f"Müller{n}",
                gender=("w", "m", "d", None)[n % 4],
                address={"postalCode": 1067 + n % 3, "city": "Dresden;Neustadt" if n == 5 else ""},
                plan=("gold", "silver")[n % 2],
                consent={"crm_sync": n % 7 != 0},
            )
        )
        if n % 3 == 0:
            messages.append(track("Article Rated", f"cust-{n}", properties={"rating": 5}))
    shop.log.send(*messages)
    shop.log.process()


def _segment(shop: Shop, name: str, condition: str) -> None:
    segments.save_segment(
        shop.log.engine, shop.settings, name, segments.condition_tree(condition), create=True
    )


def _segment_feed(shop: Shop, condition: str) -> None:
    """The feed `gold` of the fast path's columns, from the segment `gold-plan`."""
    _segment(shop, "gold-plan", condition)
    feed = gold_feed(source={"segments": ["gold-plan"]}, columns=_COLUMNS)
    feeds.save_feed(shop.log.engine, feed, create=True)


# A segment's members, or every profile with a condition (each with its own index walk).
_EVERY_SOURCE = pytest.mark.parametrize(
    "source",
    [{"segments": ["gold-plan"]}, {"condition": "consent crm_sync or not consent crm_sync"}],
    ids=["segment", "condition"],
)


def _with(settings: Settings, **feed_settings: Any) -> Settings:
    return settings.model_copy(update={"feeds": settings.feeds.model_copy(update=feed_settings)})


def _run(shop: Shop, settings: Settings) -> tuple[feeds.FeedRun, bytes]:
    run = feeds.run_now(shop.log.engine, settings, "gold")
    assert run.state == "succeeded", run.error
    folder = Path(settings.feeds.local_dir) / "crm"
    return run, (folder / str(run.file_name)).read_bytes()


def _names(definition: Any) -> list[str]:
    return [c.name for c in definition.columns]


def _counts(run: feeds.FeedRun) -> dict[str, Any]:
    return {
        k: v for k, v in (run.stats or {}).items() if k not in ("parts", "seconds", "destination")
    }


@pytest.mark.parametrize(
    ("source", "columns", "fmt"),
    [
        ({"condition": "consent crm_sync or not consent crm_sync"}, _COLUMNS, None),
        (
            {"segments": ["gold-plan", "muster"]},
            _COLUMNS,
            {"type": "csv", "delimiter": ";", "encoding": "utf-8-sig", "line_ending": "crlf"},
        ),
        ({"segments": ["gold-plan", "muster"]}, _GENERAL, {"type": "jsonl"}),
        ({"condition": 'trait plan = "gold" or mood is positive'}, _GENERAL, None),
        (  # a glob, a `%`, a list and a time in the compiled SQL of a streamed query
            {
                "condition": 'visited page "/konto/50%*" or trait plan in ["gold", "100%"] '
                'or not consent crm_sync or did "Article Rated" with rating = 5 within 30 days'
            },
            _COLUMNS,
            None,
        ),
    ],
    ids=[
        "condition-fast",
        "segments-bom-crlf",
        "segments-general-jsonl",
        "condition-general",
        "condition-glob-list",
    ],
)
def test_feed_in_parts_writes_the_file_of_one_process(
    shop: Shop,
    tmp_path: Path,
    source: dict[str, Any],
    columns: list[dict[str, Any]],
    fmt: dict[str, Any] | None,
) -> None:
    _customers(shop, 240)
    _segment(shop, "gold-plan", 'trait plan = "gold"')
    _segment(shop, "muster", "consent crm_sync")
    document = gold_feed(source=source, columns=columns)
    if fmt is not None:
        document["format"] = fmt
    feeds.save_feed(shop.log.engine, document, create=True)
    one, alone = _run(shop, _with(shop.settings, processes=1))
    parted = _with(shop.settings, processes=3, range_rows=23)
    run, together = _run(shop, parted)
    assert together == alone  # the same bytes, in the same order, one header, one BOM
    assert (run.rows, run.bytes, run.checksum) == (one.rows, one.bytes, one.checksum)
    assert _counts(run) == _counts(one)
    assert one.rows and one.rows > 60
    parts = (run.stats or {}).get("parts")
    with shop.log.engine.connect() as conn:
        cut = range_bounds(conn, _definition(conn, "gold"), rows=23)
    assert cut and parts is not None  # (both backends cut every source: migration 0016)
    assert parts["processes"] == 3 and parts["ranges"] == len(cut) + 1 >= 4
    leftovers = [p.name for p in (Path(parted.feeds.local_dir) / "crm").iterdir()]
    assert sorted(leftovers) == sorted([str(run.file_name), f"{run.file_name}.sha256"])
    # The run's process wrote what it could before the workers were ready (small ranges: all
    # of them, most likely); here every range goes to the two workers.
    with shop.log.engine.connect() as conn:
        definition = _definition(conn, "gold")
    job = PartJob(parted, definition, definition.format, tuple(_names(definition)), clock.now())
    staged = tmp_path / "staged.part"
    stats = RowStats()
    with staged.open("wb") as out:
        writer = open_writer(out, definition.format, _names(definition))
        done = write_in_parts(
            shop.log.engine,
            job,
            writer,
            stats,
            bounds=cut,
            staged=staged,
            processes=3,
            renew=lambda: None,
            own_ranges=False,
        )
    assert staged.read_bytes() == alone
    assert (writer.rows, writer.sha256) == (one.rows, one.checksum)
    assert stats.as_json() == {k: v for k, v in _counts(one).items() if k in stats.as_json()}
    assert done["ranges_in_run_process"] == 0 and done["ranges"] == len(cut) + 1
    assert done["worker_peak_mb"] > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("staged")] == ["staged.part"]


@_EVERY_SOURCE
def test_range_bounds_cut_into_even_ranges_in_byte_order(
    shop: Shop, source: dict[str, Any]
) -> None:
    _customers(shop, 100)
    _segment(shop, "gold-plan", "consent crm_sync or not consent crm_sync")
    feeds.save_feed(shop.log.engine, gold_feed(source=source), create=True)
    with shop.log.engine.connect() as conn:
        definition = _definition(conn, "gold")
        assert range_bounds(conn, definition, rows=100) == []  # one range: no cut
        cut = range_bounds(conn, definition, rows=30)
    ids = sorted(shop.log.live_profiles())
    assert cut == [ids[29], ids[59], ids[89]]  # each range up to and with its bound
    assert cut == sorted(cut, key=lambda s: s.encode())


@_EVERY_SOURCE
def test_a_range_of_a_feed_reads_indexes_in_byte_order_without_a_sort(
    shop: Shop, source: dict[str, Any]
) -> None:
    """PostgreSQL's indexes follow the database's collation; the file's order is bytes. The
    indexes in byte order (migrations 0015, 0016) let a range of a feed be a range of each
    index, merged, instead of a scan of every profile and a sort (ten ranges at 1M profiles
    read the table ten times). SQLite compares bytes anyway."""
    if shop.log.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's own order is byte order")
    _customers(shop, 40)
    _segment(shop, "gold-plan", "consent crm_sync or not consent crm_sync")
    feeds.save_feed(shop.log.engine, gold_feed(source=source, columns=_COLUMNS), create=True)
    with shop.log.engine.connect() as conn:
        definition = _definition(conn, "gold")
        ids = sorted(shop.log.live_profiles())
        query = _select(
            conn,
            definition,
            shop.settings,
            [],
            clock.now(),
            with_entry=False,
            fields=["gender", "last_name"],
            bounds=(ids[9], ids[29]),
            tail=False,
        )
        # (the planner's choice for a table of a million rows, not of forty)
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = query_plan(conn, query)
    assert "ix_profiles_id_c" in plan, plan
    assert "Sort" not in plan, plan
    if "segments" in source:
        assert "ix_segment_members_segment_c" in plan, plan


def test_a_feed_read_stopped_halfway_frees_its_connection(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL streams a feed's rows; a stream holds its connection (not even a rollback
    gets through) until it is read to the end or closed. A run that fails halfway (a cell
    its encoding cannot hold, a disk full) closes it: the query is cancelled, and the
    connection goes back to the pool fit for the next query."""
    monkeypatch.setattr("closedloop.feeds.rows._YIELD", 5)  # (a partition of five rows)
    _customers(shop, 40)
    _segment_feed(shop, "consent crm_sync or not consent crm_sync")
    with shop.log.engine.connect() as conn:
        definition = _definition(conn, "gold")
        chunks = feed_columns(conn, definition, shop.settings, now=clock.now(), stats=RowStats())
        first = next(chunks)
        chunks.close()
        assert len(first[0]) <= 5
        conn.rollback()
        assert conn.scalar(sa.select(sa.func.count()).select_from(profiles)) == 40
    run, data = _run(shop, shop.settings)  # (the pool's connections all fit)
    assert run.rows == len(data.splitlines()) - 1 > 20


def test_without_chunked_rows_a_feed_is_read_by_a_cursor(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A libpq older than 17 cannot stream rows in chunks: the rows come by `FETCH` from a
    server-side cursor, and the file is the same."""
    _customers(shop, 40)
    _segment_feed(shop, "consent crm_sync or not consent crm_sync")
    _first, streamed = _run(shop, shop.settings)
    monkeypatch.setattr("closedloop.feeds.rows.chunked_rows", lambda: False)
    _second, fetched = _run(shop, shop.settings)
    assert fetched == streamed and len(streamed.splitlines()) > 20


def test_feed_in_parts_names_the_row_of_the_whole_file(shop: Shop) -> None:
    _customers(shop, 120)
    ids = sorted(shop.log.live_profiles())
    # a customer with consent whose row comes in the second half (not in the first range)
    late = next(
        n
        for n in range(120)
        if n % 7 and ids.index(str(shop.log.profile_of("user_id", f"cust-{n}"))) > 90
    )
    renamed = {
        **identify(f"cust-{late}", lastName="Łukasiewicz"),
        "timestamp": "2026-11-23T10:00:00Z",
    }
    shop.log.send(renamed)
    shop.log.process()
    _segment(shop, "gold-plan", "consent crm_sync or not consent crm_sync")
    feeds.save_feed(
        shop.log.engine,
        gold_feed(
            source={"segments": ["gold-plan"]},
            columns=_COLUMNS,
            format={"type": "csv", "delimiter": ";", "encoding": "cp1252"},
        ),
        create=True,
    )
    alone = feeds.run_now(shop.log.engine, _with(shop.settings, processes=1), "gold")
    parted = _with(shop.settings, processes=2, range_rows=9)
    together = feeds.run_now(shop.log.engine, parted, "gold")
    assert alone.state == together.state == "failed"
    assert together.error == alone.error
    assert "column `nachname`" in str(alone.error) and "U+0141" in str(alone.error)
    assert "row 1," not in str(alone.error)  # a row after the first range's
    assert list((Path(parted.feeds.local_dir) / "crm").iterdir()) == []


def test_a_failing_worker_fails_the_run_and_leaves_no_part(shop: Shop, tmp_path: Path) -> None:
    """A worker that cannot read the store (its settings name another database): the error
    comes back to the run, which stops; no part file stays behind."""
    _customers(shop, 60)
    _segment_feed(shop, 'trait plan = "gold"')
    with shop.log.engine.connect() as conn:
        definition = _definition(conn, "gold")
        cut = range_bounds(conn, definition, rows=10)
    assert len(cut) == 2
    elsewhere = shop.settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'missing' / 'nothing.db'}"}
    )
    job = PartJob(elsewhere, definition, CsvFormat(), ("key",), clock.now())
    staged = tmp_path / "staged.part"
    with staged.open("wb") as out:
        writer = open_writer(out, CsvFormat(), [c["name"] for c in _COLUMNS])
        with pytest.raises(Exception, match="unable to open database file"):
            write_in_parts(
                shop.log.engine,
                job,
                writer,
                RowStats(),
                bounds=cut,
                staged=staged,
                processes=2,
                renew=lambda: None,
                own_ranges=False,
            )
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("staged")) == [
        "staged.part"
    ]


def _wait_ready(count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while feeds.ready_workers() != count:
        assert time.monotonic() < deadline, f"{feeds.ready_workers()} workers ready, not {count}"
        time.sleep(0.05)


def test_a_long_running_process_keeps_workers_ready_for_big_feeds(shop: Shop) -> None:
    """`keep_workers_ready` (the scheduler of `serve`, `closedloop worker`) starts nothing
    while no run was written in parts; after such a run it keeps workers started, the next
    run takes them (and writes the same file), and new ones are started after it. A ready
    worker that ended while it waited is not given a range: the run starts another."""
    _customers(shop, 120)
    _segment_feed(shop, "consent crm_sync or not consent crm_sync")
    parted = _with(shop.settings, processes=2, range_rows=9)
    try:
        assert feeds.keep_workers_ready(shop.log.engine, parted) == 0  # no big feed yet
        assert feeds.ready_workers() == 0
        first, alone = _run(shop, parted)
        assert (first.stats or {})["parts"]["workers_started_ahead"] == 0
        _wait_ready(1)  # started after the run, for the next one
        second, together = _run(shop, parted)
        assert together == alone
        parts = (second.stats or {})["parts"]
        assert parts["workers_started_ahead"] == 1 and parts["processes"] == 2
        _wait_ready(1)
        # a ready worker that is gone: the run starts one of its own
        ready = feeds.parts._ready._idle[0]
        ready._process.kill()
        ready._process.wait()
        third, again = _run(shop, parted)
        assert again == alone
        assert (third.stats or {})["parts"]["workers_started_ahead"] == 0
        # a process that starts later (serve's scheduler, a worker) sees the runs in parts
        feeds.stop_ready_workers()
        assert feeds.ready_workers() == 0
        assert feeds.keep_workers_ready(shop.log.engine, parted) == 1
        _wait_ready(1)
        assert feeds.keep_workers_ready(shop.log.engine, _with(parted, processes=1)) == 0
    finally:
        feeds.stop_ready_workers()
    assert feeds.ready_workers() == 0


def test_processes_default_to_half_the_cores_beside_a_local_postgres(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`FEEDS__PROCESSES=0`: one process per core (at most 4); but where PostgreSQL runs on
    the same machine and streams the rows, each process's server backend works on a core
    of its own beside it, so half as many. A number set is taken as it is."""
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    auto, three = _with(shop.settings, processes=0), _with(shop.settings, processes=3)
    sqlite = sa.create_engine("sqlite://")
    remote = sa.create_engine("postgresql+psycopg://closedloop@db.example.net/crm")
    local = sa.create_engine("postgresql+psycopg://closedloop@127.0.0.1/crm")
    socket = sa.create_engine("postgresql+psycopg://closedloop@/crm?host=/run/postgresql")
    engines = (sqlite, remote, local, socket)
    assert [process_count(e, auto) for e in engines] == [4, 4, 2, 2]
    assert [process_count(e, three) for e in engines] == [3, 3, 3, 3]
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert [process_count(e, auto) for e in engines] == [2, 2, 1, 1]
    monkeypatch.setattr("closedloop.feeds.parts.chunked_rows", lambda: False)
    assert process_count(local, auto) == 2  # rows by FETCH: the process waits for them
