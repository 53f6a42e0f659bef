from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import ingest, store
from closedloop.ingest import log
from closedloop.ingest._tables import EVENT_COLUMNS, events
from closedloop.ingest.log import LogPosition, read_committed
from closedloop.store import _bulk


def _row(source_id: int, message_id: str, at: datetime) -> tuple[object, ...]:
    return (
        source_id,
        message_id,
        "track",
        "Article Rated",
        "u1",
        None,
        at,
        at,
        at,
        at,
        '{"type":"track","properties":{"rating":4}}',
    )


def test_upgrade_reaches_head_and_is_idempotent(engine: Engine) -> None:
    assert store.current_revision(engine) == store.head_revision()
    store.upgrade(engine)
    assert store.current_revision(engine) == store.head_revision()
    names = set(sa.inspect(engine).get_table_names())
    assert {"sources", "events", "failed_events"} <= names


def test_sqlite_store_uses_wal(tmp_path: object) -> None:
    eng = store.create_store_engine(f"sqlite:///{tmp_path}/wal.db")
    with eng.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    eng.dispose()


def test_unsupported_database_url_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        store.create_store_engine("mysql://root@localhost/test")


def test_utc_datetime_round_trips_as_aware_utc(engine: Engine) -> None:
    berlin = timezone(timedelta(hours=1))
    at = datetime(2026, 1, 31, 23, 30, 0, 123456, tzinfo=berlin)
    with engine.begin() as conn:
        store.bulk_insert_ignoring_duplicates(
            conn,
            events,
            EVENT_COLUMNS,
            [_row(1, "m1", at)],
            conflict_columns=("source_id", "message_id"),
        )
        conn.execute(
            events.insert().values(**dict(zip(EVENT_COLUMNS, _row(1, "m2", at), strict=True)))
        )
    with engine.connect() as conn:
        stamps = conn.execute(sa.select(events.c.timestamp).order_by(events.c.id)).scalars().all()
    assert stamps == [at, at]
    assert all(s.tzinfo is not None and s.utcoffset() == timedelta(0) for s in stamps)


def test_naive_datetime_is_refused(engine: Engine) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), engine.begin() as conn:
        conn.execute(
            events.insert().values(
                **dict(zip(EVENT_COLUMNS, _row(1, "m", datetime(2026, 1, 1)), strict=True))  # noqa: DTZ001
            )
        )


def test_bulk_insert_ignores_duplicates_and_counts_new_rows(engine: Engine) -> None:
    at = datetime(2026, 11, 22, tzinfo=UTC)
    first = [_row(1, f"m{i}", at) for i in range(50)]
    with engine.begin() as conn:
        assert (
            store.bulk_insert_ignoring_duplicates(
                conn, events, EVENT_COLUMNS, first, conflict_columns=("source_id", "message_id")
            )
            == 50
        )
    # Half known (the PostgreSQL COPY fails and the staging path takes over), half new,
    # and the same id from another source is a different message.
    second = [_row(1, f"m{i}", at) for i in range(25, 75)] + [_row(2, "m0", at)]
    with engine.begin() as conn:
        assert (
            store.bulk_insert_ignoring_duplicates(
                conn, events, EVENT_COLUMNS, second, conflict_columns=("source_id", "message_id")
            )
            == 26
        )
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar() == 76
    # The staging path leaves a usable connection and transaction behind.
    with engine.begin() as conn:
        assert (
            store.bulk_insert_ignoring_duplicates(
                conn,
                events,
                EVENT_COLUMNS,
                [_row(3, "z", at)],
                conflict_columns=("source_id", "message_id"),
            )
            == 1
        )


def test_bulk_insert_refuses_unknown_columns(engine: Engine) -> None:
    with pytest.raises(ValueError, match="not a column"), engine.begin() as conn:
        store.bulk_insert_ignoring_duplicates(
            conn, events, ("nope",), [(1,)], conflict_columns=("source_id",)
        )


def test_one_statement_append_commits_on_its_own_and_skips_duplicates(
    engine: Engine, db_url: str
) -> None:
    at = datetime(2026, 11, 22, tzinfo=UTC)
    rows = [_row(1, f"a{i}", at) for i in range(100)]
    keys = ("source_id", "message_id")
    if engine.dialect.name != "sqlite":
        # PostgreSQL appends through COPY in a transaction: this path does not apply.
        assert (
            store.sqlite_insert_autocommit(
                engine, events, EVENT_COLUMNS, rows, conflict_columns=keys
            )
            is None
        )
        return
    assert (
        store.sqlite_insert_autocommit(engine, events, EVENT_COLUMNS, rows, conflict_columns=keys)
        == 100
    )
    again = [*rows[50:], _row(1, "b0", at)]
    assert (
        store.sqlite_insert_autocommit(engine, events, EVENT_COLUMNS, again, conflict_columns=keys)
        == 1
    )
    # Committed: another engine on the same file sees every row with its time intact.
    other = store.create_store_engine(db_url)
    try:
        with other.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar() == 101
            stamp = conn.execute(sa.select(events.c.timestamp).limit(1)).scalar_one()
        assert stamp == at
    finally:
        other.dispose()
    too_many = [_row(1, f"c{i}", at) for i in range(4000)]  # over SQLite's bound-value limit
    assert (
        store.sqlite_insert_autocommit(
            engine, events, EVENT_COLUMNS, too_many, conflict_columns=keys
        )
        is None
    )
    assert (
        store.sqlite_insert_autocommit(engine, events, EVENT_COLUMNS, [], conflict_columns=keys)
        is None
    )


def test_one_statement_appends_keep_the_wal_bounded_beside_background_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's own connection checkpoints inline past its threshold while the pooled
    ones keep the 1 GB fallback (their checkpoints belong to the background thread). Before,
    an ingest-only server's WAL grew to 1 GB and one commit then copied all of it."""
    monkeypatch.setattr(_bulk, "_WRITER_CHECKPOINT_PAGES", 64)
    path = tmp_path / "bounded.db"
    eng = store.create_store_engine(f"sqlite:///{path}", background_checkpoints=True)
    try:
        store.upgrade(eng)
        source = ingest.add_source(eng, "web", kind="web").source
        at = datetime(2026, 11, 22, tzinfo=UTC)
        payload = '{"type":"track","properties":{"text":"' + "x" * 1500 + '"}}'
        keys = ("source_id", "message_id")
        for batch in range(40):  # about 2,000 pages of WAL without a checkpoint
            rows = [(*_row(source.id, f"m{batch}-{i}", at)[:-1], payload) for i in range(50)]
            inserted = store.sqlite_insert_autocommit(
                eng, events, EVENT_COLUMNS, rows, conflict_columns=keys
            )
            assert inserted == 50
        wal_pages = (path.parent / (path.name + "-wal")).stat().st_size // 4096
        assert wal_pages < 400, wal_pages
        checkpointer = store.wal_checkpointer(eng)
        assert checkpointer is not None
        with eng.connect() as conn:
            pooled = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
            assert pooled == checkpointer.fallback_pages
            assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar() == 2000
    finally:
        eng.dispose()
    assert eng not in _bulk._writers  # disposing the engine closed the writer's connection
    rows = [_row(source.id, "after", at)]  # a disposed engine works on: a new writer's own
    assert (
        store.sqlite_insert_autocommit(eng, events, EVENT_COLUMNS, rows, conflict_columns=keys) == 1
    )
    eng.dispose()
    assert eng not in _bulk._writers


def test_one_statement_append_while_the_writer_connection_is_busy_uses_the_pool(
    engine: Engine,
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite only: PostgreSQL appends through COPY")
    source = ingest.add_source(engine, "web", kind="web").source
    at = datetime(2026, 11, 22, tzinfo=UTC)
    keys = ("source_id", "message_id")
    first = [_row(source.id, "first", at)]
    assert (
        store.sqlite_insert_autocommit(engine, events, EVENT_COLUMNS, first, conflict_columns=keys)
        == 1
    )
    writer = _bulk._writer_connection(engine)
    with writer.lock:  # another thread appending through it
        rows = [_row(source.id, f"b{i}", at) for i in range(3)]
        assert (
            store.sqlite_insert_autocommit(
                engine, events, EVENT_COLUMNS, rows, conflict_columns=keys
            )
            == 3
        )
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar() == 4


def test_upgrade_from_0001_keeps_events_and_reads_them_in_order(db_url: str) -> None:
    engine = store.create_store_engine(db_url)
    try:
        store.upgrade(engine, "0001")
        assert store.current_revision(engine) == "0001"
        source = ingest.add_source(engine, "web", kind="web").source
        at = datetime(2026, 11, 22, tzinfo=UTC)
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO events (source_id, message_id, type, user_id, timestamp, "
                    "received_at, payload) VALUES (:s, 'old', 'track', 'u1', :t, :t, '{}')"
                ),
                {"s": source.id, "t": at if engine.dialect.name == "postgresql" else 0},
            )
        store.upgrade(engine)
        assert store.current_revision(engine) == store.head_revision()
        with engine.begin() as conn:
            store.bulk_insert_ignoring_duplicates(
                conn,
                events,
                EVENT_COLUMNS,
                [_row(source.id, "new", at)],
                conflict_columns=("source_id", "message_id"),
            )
        with engine.connect() as conn:
            found = [e.message_id for _, e in read_committed(conn, LogPosition(), limit=10)]
        assert found == ["old", "new"]
    finally:
        engine.dispose()


def test_upgrade_to_members_by_profile_keeps_every_member_and_goes_back(db_url: str) -> None:
    """Migration 0020 re-keys `segment_members` by profile (SQLite: one `WITHOUT ROWID`
    B-tree, no other index); the members stay, and a downgrade restores the key by segment."""
    engine = store.create_store_engine(db_url)
    pg = engine.dialect.name == "postgresql"
    at = datetime(2026, 11, 22, tzinfo=UTC)
    rows = [("s1", "p_b", 1), ("s1", "p_a", 2), ("s2", "p_a", 3)]
    try:
        store.upgrade(engine, "0019")
        with engine.begin() as conn:
            for name in ("s1", "s2"):
                conn.execute(
                    sa.text(
                        "INSERT INTO segments (name, condition, tree, created_at, updated_at) "
                        "VALUES (:n, 'mood is positive', '{\"mood\": \"positive\"}', :t, :t)"
                    ),
                    {"n": name, "t": at if pg else 0},
                )
            for segment, pid, us in rows:
                conn.execute(
                    sa.text(
                        "INSERT INTO segment_members (segment, profile_id, entered_at) "
                        "VALUES (:s, :p, :t)"
                    ),
                    {"s": segment, "p": pid, "t": at + timedelta(microseconds=us) if pg else us},
                )

        def members() -> list[tuple[str, str]]:
            with engine.connect() as conn:
                found = conn.execute(sa.text("SELECT segment, profile_id FROM segment_members"))
                return sorted((s, p) for s, p in found)

        store.upgrade(engine)
        assert members() == sorted((s, p) for s, p, _ in rows)
        inspector = sa.inspect(engine)
        key = inspector.get_pk_constraint("segment_members")["constrained_columns"]
        assert key == ["profile_id", "segment"]
        indexes = {i["name"] for i in inspector.get_indexes("segment_members")}
        assert "ix_segment_members_profile_id" not in indexes
        if not pg:
            with engine.connect() as conn:
                sql = conn.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE name = 'segment_members'"
                ).scalar_one()
            assert "WITHOUT ROWID" in sql and indexes == set(), (sql, indexes)
        else:
            assert "ix_segment_members_segment_c" in indexes  # (migration 0015, kept)
        from alembic import command

        from closedloop.store._migrate import _config

        command.downgrade(_config(engine), "0019")
        assert members() == sorted((s, p) for s, p, _ in rows)
        inspector = sa.inspect(engine)
        key = inspector.get_pk_constraint("segment_members")["constrained_columns"]
        assert key == ["segment", "profile_id"]
        indexes = {i["name"] for i in inspector.get_indexes("segment_members")}
        assert "ix_segment_members_profile_id" in indexes
    finally:
        engine.dispose()


def test_upgrade_to_the_batched_history_index_fills_it_on_sqlite(db_url: str) -> None:
    """Migration 0021: on SQLite every change there is goes into `segment_changes_by_profile`
    and the mark to the newest, and the index on `segment_changes.profile_id` goes; on
    PostgreSQL that index stays and the table stays empty. A downgrade restores the index."""
    from alembic import command

    from closedloop.store._migrate import _config

    engine = store.create_store_engine(db_url)
    pg = engine.dialect.name == "postgresql"
    at = datetime(2026, 11, 22, tzinfo=UTC)
    try:
        store.upgrade(engine, "0020")
        with engine.begin() as conn:
            for pid in ("p_b", "p_a", "p_b"):
                conn.execute(
                    sa.text(
                        "INSERT INTO segment_changes (segment, profile_id, change, at, reason) "
                        "VALUES ('s1', :p, 'entered', :t, 'why')"
                    ),
                    {"p": pid, "t": at if pg else 0},
                )
        store.upgrade(engine)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT profile_id, change_id FROM segment_changes_by_profile")
            ).all()
            mark = conn.execute(
                sa.text("SELECT event_id FROM processor_cursors WHERE name = 'segment_changes'")
            ).scalar()
        indexes = {i["name"] for i in sa.inspect(engine).get_indexes("segment_changes")}
        if pg:
            assert rows == [] and mark is None
            assert "ix_segment_changes_profile_id" in indexes
        else:
            assert sorted(rows) == [("p_a", 2), ("p_b", 1), ("p_b", 3)]
            assert mark == 3
            assert "ix_segment_changes_profile_id" not in indexes
        command.downgrade(_config(engine), "0020")
        indexes = {i["name"] for i in sa.inspect(engine).get_indexes("segment_changes")}
        assert "ix_segment_changes_profile_id" in indexes
        assert "segment_changes_by_profile" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_upgrade_leaves_room_in_postgres_profile_pages_and_goes_back(db_url: str) -> None:
    """Migration 0022: on PostgreSQL the profiles table keeps 30 % of each page free for
    the processor's updates (fillfactor 70); a downgrade resets it. SQLite: nothing."""
    from alembic import command

    from closedloop.store._migrate import _config

    engine = store.create_store_engine(db_url)
    if engine.dialect.name != "postgresql":
        engine.dispose()
        pytest.skip("SQLite has no fillfactor")

    def options() -> list[str] | None:
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT reloptions FROM pg_class WHERE oid = 'profiles'::regclass")
            ).scalar()

    try:
        store.upgrade(engine)
        assert options() == ["fillfactor=70"]
        command.downgrade(_config(engine), "0021")
        assert options() is None
        store.upgrade(engine)
        assert options() == ["fillfactor=70"]
    finally:
        engine.dispose()


def test_derived_writes_commit_without_waiting_for_the_disk(engine: Engine) -> None:
    """State derived again from the log commits without a flush of its own (SQLite:
    `synchronous=NORMAL`; PostgreSQL: `synchronous_commit` off), for that transaction only;
    every other write keeps the store's setting."""
    pg = engine.dialect.name == "postgresql"
    show = "SHOW synchronous_commit" if pg else "PRAGMA synchronous"
    relaxed, full = ("off", "on") if pg else (1, 2)  # SQLite: 1 NORMAL, 2 FULL
    if not pg:
        engine = store.create_store_engine(str(engine.url), sqlite_synchronous="FULL")
    try:
        with store.begin_write(engine, derived=True) as conn:
            assert conn.exec_driver_sql(show).scalar() == relaxed
        with store.begin_write(engine) as conn:
            assert conn.exec_driver_sql(show).scalar() == full
        with engine.connect() as conn:
            assert conn.exec_driver_sql(show).scalar() == full
    finally:
        if not pg:
            engine.dispose()


def test_upgrade_clears_the_master_data_of_merged_profiles(db_url: str) -> None:
    """Migration 0023: a profile merged in a later batch kept its master data, problems and
    customer key (the processor before this change); the upgrade clears them, as a rebuild
    stores them, and leaves the live profiles as they are."""
    from closedloop.profiles import quality
    from tests.conftest import make_settings
    from tests.profiles.conftest import Log, identify

    engine = store.create_store_engine(db_url)
    try:
        store.upgrade(engine)
        log = Log(engine, make_settings(db_url))
        log.send(identify(None, "a-1", email="anna@example.com", lastName="Muster"))
        log.process()
        log.send(identify("u-1"), identify("u-1", "a-1"))
        log.process()
        survivor = log.profile_of("user_id", "u-1")
        stale = {"email": "anna@example.com", "last_name": "Muster"}
        with engine.begin() as conn:  # the row as the processor before left it
            conn.execute(
                sa.text(
                    "UPDATE profiles SET customer_key = 'v1.' || :hex, masterdata = :md, "
                    "quality = :q WHERE merged_into IS NOT NULL"
                ).bindparams(
                    sa.bindparam("md", type_=store.JSONDocument),
                    sa.bindparam("q", type_=store.JSONDocument),
                ),
                {"hex": "a" * 64, "md": stale, "q": [{"field": "x", "problem": "y", "value": "z"}]},
            )
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '0022'"))
        before = _profile_rows(engine)
        store.upgrade(engine, "0023")  # (the later revisions are in place already)
        after = _profile_rows(engine)
        empty, no_problems = quality.derive_masterdata({}, region="DE")
        for pid, row in after.items():
            if row["merged_into"] is None:
                assert row == before[pid]
            else:
                assert row["merged_into"] == survivor
                assert (row["customer_key"], row["masterdata"], row["quality"]) == (
                    None,
                    empty,
                    no_problems,
                )
    finally:
        engine.dispose()


def _profile_rows(engine: Engine) -> dict[str, dict[str, object]]:
    from closedloop.profiles._tables import profiles

    with engine.connect() as conn:
        return {
            r["id"]: dict(r)
            for r in conn.execute(
                sa.select(
                    profiles.c.id,
                    profiles.c.merged_into,
                    profiles.c.customer_key,
                    profiles.c.masterdata,
                    profiles.c.quality,
                )
            ).mappings()
        }


def test_ids_are_never_given_twice_and_the_migration_starts_above_the_cursors(
    tmp_path: Path,
) -> None:
    """SQLite gave a new row the largest id plus one, so after the newest rows were deleted
    their ids came again, behind the cursors that follow them. Migration 0024 rebuilds the
    tables with AUTOINCREMENT and starts each above its rows and its cursors."""
    eng = store.create_store_engine(f"sqlite:///{tmp_path}/ids.db")
    store.upgrade(eng, "0023")
    source_id = ingest.add_source(eng, "web", kind="web").source.id
    at = datetime(2026, 11, 20, tzinfo=UTC)
    with eng.begin() as conn:
        ingest.log.append(conn, [_row(source_id, f"m{i}", at) for i in range(3)])
        # Events 4 and 5 were processed, then erased; changes up to 9 were read.
        for name, upto in (("main", 5), ("surveys_entries", 9)):
            conn.exec_driver_sql(
                "INSERT INTO processor_cursors (name, txid, event_id, seq) VALUES (?, 0, ?, 0) "
                "ON CONFLICT (name) DO UPDATE SET event_id = excluded.event_id",
                (name, upto),
            )
    store.upgrade(eng)

    def newest_after_insert(insert: str) -> int:
        with eng.begin() as conn:
            conn.exec_driver_sql(insert)
            return int(conn.exec_driver_sql("SELECT last_insert_rowid()").scalar_one())

    with eng.begin() as conn:
        ingest.log.append(conn, [_row(source_id, "after-upgrade", at)])
        assert conn.execute(sa.select(sa.func.max(events.c.id))).scalar() == 6
    change = (
        "INSERT INTO segment_changes (segment, profile_id, change, at, reason) "
        "VALUES ('s', 'p_1', 'entered', 0, 'r')"
    )
    assert newest_after_insert(change) == 10
    # The newest rows deleted: the next ids go on, never back.
    with eng.begin() as conn:
        conn.exec_driver_sql("DELETE FROM events WHERE id = 6")
        conn.exec_driver_sql("DELETE FROM segment_changes WHERE id = 10")
    with eng.begin() as conn:
        ingest.log.append(conn, [_row(source_id, "after-delete", at)])
        assert conn.execute(sa.select(sa.func.max(events.c.id))).scalar() == 7
    assert newest_after_insert(change) == 11
    eng.dispose()


def test_segment_changes_recorded_before_0025_keep_their_place_in_commit_order(
    db_url: str,
) -> None:
    """Migration 0025: the changes stored before get transaction id 0, so a cursor (0, id)
    of the survey engine reads on after them, then the new ones (PostgreSQL: in commit
    order; SQLite: by id)."""
    from closedloop.segments._tables import segment_changes

    eng = store.create_store_engine(db_url)
    try:
        store.upgrade(eng, "0024")
        insert = segment_changes.insert().values(
            segment="s", profile_id="p_1", change="entered", at=datetime.now(UTC), reason="r"
        )
        with eng.begin() as conn:
            for _ in range(3):
                conn.execute(insert)
        store.upgrade(eng)
        with eng.begin() as conn:
            conn.execute(insert)
        with eng.connect() as conn:
            stmt = log.committed_after(
                sa.select(segment_changes.c.id),
                conn.dialect.name,
                LogPosition(0, 2),
                segment_changes,
            )
            assert list(conn.execute(stmt).scalars()) == [3, 4]
    finally:
        eng.dispose()


@pytest.mark.parametrize("processed", [True, False])
def test_an_upgrade_over_processed_events_names_the_rebuild_they_need(
    db_url: str, processed: bool
) -> None:
    """A revision whose change to the derived state cannot reach events processed before
    it (0026: attributions by e-mail or phone) is named by `upgrade` where the processor
    had applied events; not for a new store, nor for one with nothing processed."""
    eng = store.create_store_engine(db_url)
    try:
        assert store.upgrade(eng, "0025") == []  # a new store
        if processed:
            with eng.begin() as conn:
                moved = conn.exec_driver_sql(
                    "UPDATE processor_cursors SET event_id = 7 WHERE name = 'main'"
                )
                assert moved.rowcount == 1
        notes = store.upgrade(eng)
        if processed:
            assert len(notes) == 1 and "before revision 0026" in notes[0], notes
            assert "`closedloop rebuild`" in notes[0]
        else:
            assert notes == []
        assert store.upgrade(eng) == []  # nothing left to apply
    finally:
        eng.dispose()
