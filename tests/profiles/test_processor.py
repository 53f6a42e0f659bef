"""The processor: rebuild gives the same state, a crash mid-batch applies nothing twice,
workers take turns, lag is measured."""

from __future__ import annotations

import gc
import secrets
import threading
import time
import weakref
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from closedloop import privacy, profiles, runtime, store
from closedloop.demo import generate_shop
from closedloop.identity._tables import identities, identity_conflicts, identity_merges
from closedloop.ingest import log as ingest_log
from closedloop.ingest._tables import events
from closedloop.ingest.log import LogPosition, oldest_open_transaction
from closedloop.profiles import processor
from closedloop.profiles._tables import (
    consent_changes,
    event_attributions,
    event_tallies,
    processor_cursors,
)
from closedloop.profiles._tables import profiles as profiles_table
from tests.conftest import wait_for
from tests.profiles.conftest import Log, held_open, identify, track

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def snapshot(engine: Engine) -> dict[str, Any]:
    """Every derived row, without autoincrement ids and the batch bookkeeping."""
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        for table, order in (
            (profiles_table, [profiles_table.c.id]),
            (identities, [identities.c.key]),
            (identity_merges, [identity_merges.c.event_id, identity_merges.c.merged_id]),
            # Orders that leave no ties: PostgreSQL returns tied rows in whatever order its
            # heap holds them, which updates and vacuum change.
            (
                identity_conflicts,
                [
                    identity_conflicts.c.profile_id,
                    identity_conflicts.c.identity_key,
                    identity_conflicts.c.other_profile_id,
                    identity_conflicts.c.reason,
                ],
            ),
            (
                consent_changes,
                [
                    consent_changes.c.event_id,
                    consent_changes.c.purpose,
                    consent_changes.c.profile_id,
                    consent_changes.c.granted,
                    consent_changes.c.source,
                ],
            ),
            (event_attributions, [event_attributions.c.event_id]),
            (
                event_tallies,
                [event_tallies.c.profile_id, event_tallies.c.event, event_tallies.c.facet],
            ),
        ):
            rows = conn.execute(sa.select(table).order_by(*order)).mappings().all()
            out[table.name] = [
                {
                    k: v
                    for k, v in r.items()
                    if (k != "id" or table is profiles_table) and k != "processed_seq"
                }
                for r in rows
            ]
    return out


def _shop(log: Log, customers: int = 60) -> int:
    messages = list(generate_shop(customers=customers, days=30, now=NOW))
    extra = [
        identify("cust-00001", "shared-tablet"),
        identify("cust-00002", "shared-tablet"),
        identify(None, "call-1", phone="0351 7654321"),
        identify("vip", "phone-app", email="vip@example.com", consent={"surveys": True}),
        track("Product Viewed", anonymous_id="laptop", properties={"category": "Socken"}),
        identify("vip", "laptop"),
        identify(None, "newsletter-form", email="VIP@example.com", consent={"surveys": False}),
        # a form on a tablet another customer holds: applied to the e-mail's owner
        identify("vip", "family-tablet"),
        identify("vip-2", "vip-2-phone", email="vip2@example.com"),
        identify(None, "family-tablet", email="vip2@example.com", newsletter=True),
    ]
    for start in range(0, len(messages), 250):
        log.send(*messages[start : start + 250])
    log.send(*extra)
    return len(messages) + len(extra)


def test_rebuild_gives_identical_profiles_and_identities(log: Log) -> None:
    sent = _shop(log)
    # Incremental: small batches, interleaved with more events.
    done = 0
    while (report := profiles.process_batch(log.engine, log.settings, limit=97)) and report.events:
        done += report.events
    assert done == sent
    incremental = snapshot(log.engine)
    assert incremental["profiles"] and incremental["identities"] and incremental["identity_merges"]
    assert incremental["event_attributions"]  # the shared tablet's second customer
    assert profiles.rebuild(log.engine, log.settings, limit=5000) == sent
    assert snapshot(log.engine) == incremental


def test_a_rebuild_counts_the_events_another_worker_processed_for_it(
    log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker takes part of the log after the rebuild reset the cursor (on
    PostgreSQL the worker that was draining goes on, ADR 0018): the rebuild reports the
    whole log, and the state is what processing it once stores."""
    sent = _shop(log, customers=30)
    log.process()
    incremental = snapshot(log.engine)
    drain = processor.process_available
    taken: list[int] = []

    def another_worker_first(*args: Any, **kwargs: Any) -> int:
        for _ in range(2):
            report = profiles.process_batch(log.engine, log.settings, limit=100)
            assert report is not None
            taken.append(report.events)
        return drain(*args, **kwargs)

    monkeypatch.setattr(processor, "process_available", another_worker_first)
    assert profiles.rebuild(log.engine, log.settings, limit=97) == sent
    assert taken == [100, 100]
    assert snapshot(log.engine) == incremental
    assert profiles.lag(log.engine).events == 0


def test_one_processor_over_many_batches_writes_what_a_rebuild_writes(log: Log) -> None:
    """A processor keeps its states between batches and writes only the columns a batch
    changed (SQLite): what it stored must still be the whole state, as a rebuild finds."""
    sent = _shop(log)
    proc = processor._Processor(log.settings)
    done = processor._drain(log.engine, log.settings, proc, limit=97)
    # The same values again, stated later: only their times change.
    for at in ("10:30", "11:00"):
        again = identify("vip", plan="gold", consent={"surveys": True})
        again["timestamp"] = f"2026-11-22T{at}:00Z"
        log.send(again, track("Order Completed", user_id="vip", properties={"revenue": 5}))
        sent += 2
        done += processor._drain(log.engine, log.settings, proc, limit=97)
    assert done == sent
    incremental = snapshot(log.engine)
    assert profiles.rebuild(log.engine, log.settings, limit=5000) == sent
    assert snapshot(log.engine) == incremental


def test_states_are_kept_between_batches_only_where_batches_meet_the_same_profiles(
    log: Log,
) -> None:
    """A processor keeps its states for the next batch while its batches meet the same
    customers; when fewer than one in ten of a batch's profiles were in the batch before
    (updates spread over many customers), it drops all but that batch's, with their
    identities (what the store may not have yet while it commits). Either way it stores
    what a rebuild stores."""
    proc = processor._Processor(log.settings)

    def batch(users: range, plan: str) -> int:
        log.send(*(identify(f"u{n}", plan=plan) for n in users))
        report = profiles.process_batch(log.engine, log.settings, limit=1000, _proc=proc)
        assert report is not None and report.events == len(users)
        return len(proc.cache.states)

    assert batch(range(0, 40), "a") == 40  # nothing to compare with yet: kept
    assert batch(range(0, 40), "b") == 40  # the same customers: kept
    assert batch(range(2, 42), "c") == 42  # 38 of 40 met before: kept, with 2 new
    assert batch(range(100, 140), "d") == 40  # none met before: all but its own dropped
    assert sorted(proc.cache.owners) == sorted(f"u:u{n}" for n in range(100, 140))
    assert set(proc.cache.tallies) <= set(proc.cache.states)
    assert batch(range(103, 143), "e") == 43  # 37 of 40 met the batch before: kept, 3 new
    assert batch(range(0, 40), "f") == 40  # 0 of 40: its own only
    assert not any(p.traits["plan"][0] == "e" for p in proc.cache.states.values())
    incremental = snapshot(log.engine)
    assert profiles.rebuild(log.engine, log.settings, limit=1000) == 6 * 40
    assert snapshot(log.engine) == incremental


def test_every_event_is_counted_once_on_exactly_one_profile(log: Log) -> None:
    sent = _shop(log, customers=40)
    log.process()
    with log.engine.connect() as conn:
        computed = conn.execute(
            sa.select(profiles_table.c.computed).where(profiles_table.c.merged_into.is_(None))
        ).scalars()
        assert sum(c["events"] for c in computed) == sent


def test_crash_mid_batch_rolls_back_and_replays(log: Log, monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _shop(log, customers=30)
    real_flush = processor._Processor._flush
    calls = {"n": 0}

    def failing_flush(self: Any, conn: sa.Connection, batch: Any) -> int:
        calls["n"] += 1
        written = real_flush(self, conn, batch)  # the writes happen, then the crash
        if calls["n"] == 3:
            raise RuntimeError("crash inside the batch transaction")
        return written

    monkeypatch.setattr(processor._Processor, "_flush", failing_flush)
    with pytest.raises(RuntimeError):
        while profiles.process_batch(log.engine, log.settings, limit=50):
            pass
    monkeypatch.undo()
    log.process()
    crashed = snapshot(log.engine)
    profiles.rebuild(log.engine, log.settings)
    assert snapshot(log.engine) == crashed
    total = sum(p["computed"]["events"] for p in crashed["profiles"] if p["merged_into"] is None)
    assert total == sent


def test_cursor_moves_with_the_batch(log: Log) -> None:
    log.send(*[track("Page Viewed", anonymous_id=f"a{n}") for n in range(10)])
    first = profiles.process_batch(log.engine, log.settings, limit=4)
    assert first is not None
    assert first.events == 4
    with log.engine.connect() as conn:
        cursor = conn.execute(
            sa.select(processor_cursors).where(processor_cursors.c.name == "main")
        ).one()
        fourth = (
            conn.execute(sa.select(events.c.id).order_by(events.c.id).limit(4)).scalars().all()[-1]
        )
    assert cursor.event_id == fourth
    assert profiles.lag(log.engine).events == 6
    assert log.process() == 6
    assert profiles.lag(log.engine).events == 0
    assert profiles.process_batch(log.engine, log.settings) == processor.BatchReport(
        0, 0, profiles.lag(log.engine).position
    )


def test_lag_is_in_metrics(log: Log, client: TestClient, admin_headers: dict[str, str]) -> None:
    log.send(track("Page Viewed", anonymous_id="a1"))
    text = client.get("/metrics").text
    assert "closedloop_processor_lag_events" in text
    assert "closedloop_processor_lag_seconds" in text
    assert "closedloop_processor_held_events 0.0" in text
    assert "closedloop_processor_held_seconds 0.0" in text


def test_events_behind_an_open_transaction_count_as_lag(log: Log) -> None:
    """PostgreSQL: events that commit while an older transaction is open wait for it (they
    are never read past); meanwhile they count as lag, as held, and the oldest's age shows."""
    log.send(track("Page Viewed", anonymous_id="first"))
    assert log.process() == 1
    with held_open(log, application="nightly-report") as held:
        log.send(*[track("Page Viewed", anonymous_id=f"a{n}") for n in range(3)], wait=False)
        assert profiles.process_available(log.engine, log.settings) == 0
        lag = profiles.lag(log.engine)
        assert (lag.events, lag.held) == (3, 3)
        assert lag.oldest_seconds > 0
        # The oldest open transaction is named (an analyze elsewhere may be older for a
        # moment).
        wait_for(lambda: _holder_pid(log) == held.pid)
        lag = profiles.lag(log.engine)
        assert lag.holder is not None
        assert lag.holder.application == "nightly-report"
        assert lag.holder.state == "idle in transaction"
        assert lag.holder.parts[0] == f"PID {held.pid}"
        assert lag.holder.since is not None
        assert lag.held_seconds >= 0
    assert log.process() == 3
    lag = profiles.lag(log.engine)
    assert (lag.events, lag.held, lag.oldest_seconds) == (0, 0, 0.0)
    assert (lag.holder, lag.held_seconds) == (None, 0.0)


def _holder_pid(log: Log) -> int | None:
    holder = profiles.lag(log.engine).holder
    return holder.pid if holder is not None else None


def test_holder_seen_by_a_user_without_pg_read_all_stats(log: Log) -> None:
    """A store user without `pg_read_all_stats` sees another role's session by its pid,
    user, application and database; its state and start are hidden (None, and no age)."""
    if log.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    role = "cl_limited_" + secrets.token_hex(4)
    with log.engine.connect() as admin:
        admin.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
        admin.commit()
    url = log.engine.url.set(username=role)
    limited = sa.create_engine(url)
    try:
        with held_open(log, application="other-app") as held, limited.connect() as conn:
            wait_for(lambda: _pid_seen(conn) == held.pid)
            seen = oldest_open_transaction(conn)
            conn.rollback()
        assert seen is not None
        assert (seen.application, seen.state, seen.since) == ("other-app", None, None)
        assert seen.parts == [
            f"PID {held.pid}",
            log.engine.url.username,
            "other-app",
            log.engine.url.database,
        ]
        lag = profiles.Lag(1, 0.0, LogPosition(0, 0), held=1, holder=seen)
        assert lag.held_seconds == 0.0
    finally:
        limited.dispose()
        with log.engine.connect() as admin:
            admin.exec_driver_sql(f'DROP ROLE "{role}"')
            admin.commit()


def test_held_events_show_where_the_sessions_cannot_be_read(
    log: Log, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that refuses the sessions' view (some hosted ones) still shows the held
    events, unnamed, and the rest of the answer."""
    monkeypatch.setattr(ingest_log, "_OLDEST_OPEN", "SELECT * FROM no_such_view")
    with held_open(log):
        log.send(track("Page Viewed", anonymous_id="a"), wait=False)
        lag = profiles.lag(log.engine)
    assert (lag.events, lag.held, lag.holder, lag.held_seconds) == (1, 1, None, 0.0)
    assert "cannot read the oldest open transaction" in caplog.text
    log.process()


def _pid_seen(conn: sa.Connection) -> int | None:
    seen = oldest_open_transaction(conn)
    conn.rollback()
    return seen.pid if seen is not None else None


def test_no_holder_on_sqlite(log: Log) -> None:
    if log.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only")
    log.send(track("Page Viewed", anonymous_id="a"), wait=False)
    with log.engine.connect() as conn:
        assert oldest_open_transaction(conn) is None
    lag = profiles.lag(log.engine)
    assert (lag.events, lag.held, lag.holder, lag.held_seconds) == (1, 0, None, 0.0)


def test_process_through_waits_for_an_older_transaction(log: Log) -> None:
    """`process_through` applies what was sent before it, waiting while an older transaction
    holds it back; with a short timeout it leaves the events to the processor."""
    with held_open(log) as release:
        log.send(*[track("Page Viewed", anonymous_id=f"a{n}") for n in range(3)], wait=False)
        assert profiles.process_through(log.engine, log.settings, timeout=0.2) == 0
        assert profiles.lag(log.engine).held == 3
        threading.Timer(0.3, release.set).start()
        assert profiles.process_through(log.engine, log.settings, timeout=30) == 3
    assert profiles.lag(log.engine).events == 0


def test_consent_answer_shows_the_statement_behind_an_older_transaction(
    log: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    """PUT consent answers with the statement applied, even while an older transaction
    elsewhere keeps its event from being read for a moment."""
    log.send(identify("u-1", "a-1"))
    log.process()
    pid = log.profile_of("user_id", "u-1")
    with held_open(log) as release:
        threading.Timer(0.3, release.set).start()
        answer = client.put(
            f"/v1/profiles/{pid}/consent", json={"surveys": True}, headers=admin_headers
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["consent"]["surveys"]["granted"] is True


def test_held_events_are_in_metrics(log: Log, client: TestClient) -> None:
    with held_open(log):
        log.send(*[track("Page Viewed", anonymous_id=f"a{n}") for n in range(2)], wait=False)
        text = client.get("/metrics").text
        assert "closedloop_processor_lag_events 2.0" in text
        assert "closedloop_processor_held_events 2.0" in text
        assert "closedloop_processor_held_seconds " in text
    wait_for(lambda: profiles.lag(log.engine).events == 0)
    text = client.get("/metrics").text
    assert "closedloop_processor_held_events 0.0" in text
    assert "closedloop_processor_held_seconds 0.0" in text


@pytest.mark.parametrize("pipeline", [True, False], ids=["pipeline", "batch-by-batch"])
def test_the_collector_resumes_once_the_processor_is_gone(
    log: Log, monkeypatch: pytest.MonkeyPatch, pipeline: bool
) -> None:
    """`process_available`: the drain's states die by reference counting before the cyclic
    collector resumes. Resumed while they lived, a young collection walked every object the
    drain kept, to free none."""
    sent = _shop(log, customers=20)
    made: list[weakref.ref[processor._Processor]] = []
    alive_at_resume: list[list[bool]] = []

    class Tracked(processor._Processor):
        def __init__(self, settings: Any) -> None:
            super().__init__(settings)
            made.append(weakref.ref(self))

    class Pause(runtime.CollectorPause):
        def __exit__(self, *exc: object) -> None:
            alive_at_resume.append([ref() is not None for ref in made])
            super().__exit__(*exc)

    monkeypatch.setattr(processor, "_Processor", Tracked)
    monkeypatch.setattr(processor, "CollectorPause", Pause)
    settings = log.settings.model_copy(
        update={"processor": log.settings.processor.model_copy(update={"pipeline": pipeline})}
    )
    assert gc.isenabled()
    assert profiles.process_available(log.engine, settings, limit=100) == sent
    assert alive_at_resume == [[False]]  # one pause, over the drain, the processor gone
    assert gc.isenabled()


def test_concurrent_processors_apply_each_event_once(log: Log) -> None:
    sent = _shop(log, customers=80)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            profiles.process_available(log.engine, log.settings, limit=40)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    state = snapshot(log.engine)
    assert (
        sum(p["computed"]["events"] for p in state["profiles"] if p["merged_into"] is None) == sent
    )
    profiles.rebuild(log.engine, log.settings)
    assert snapshot(log.engine) == state


def test_postgres_pipelined_drains_take_turns(log: Log) -> None:
    """PostgreSQL: one worker at a time drains (a session advisory lock, ADR 0018). While
    another holds the turn a drain applies nothing and waits while work is left; once the
    turn is free it drains everything, and leaves the turn free again."""
    if log.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's writers meet at the file's lock")
    sent = _shop(log, customers=20)
    done: list[int] = []
    with log.engine.connect() as other:  # another worker's turn
        assert other.exec_driver_sql(processor._TAKE_TURN).scalar() is True
        other.commit()
        waiting = threading.Thread(target=lambda: done.append(log.process()))
        waiting.start()
        time.sleep(0.5)
        assert waiting.is_alive() and log.live_profiles() == []
        other.exec_driver_sql(processor._END_TURN)
        other.commit()
        waiting.join(60)
    assert done == [sent]
    with log.engine.connect() as conn:  # the drain gave its turn back
        assert conn.exec_driver_sql(processor._TAKE_TURN).scalar() is True
        conn.exec_driver_sql(processor._END_TURN)
        conn.commit()
    with log.engine.connect() as other:  # nothing left: a drain without the turn returns
        other.exec_driver_sql(processor._TAKE_TURN)
        other.commit()
        assert log.process() == 0
        other.exec_driver_sql(processor._END_TURN)
        other.commit()


def test_sqlite_appends_go_on_while_a_batch_applies_its_events(
    log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite has one write lock for the whole file. A batch reads and applies its events
    without it, so the ingest's appends commit meanwhile (a connection that does not wait
    for the lock succeeds); the events appended then are the next batch's."""
    if log.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's workers lock the cursor's row, not the table")
    log.send(*[track("Page Viewed", anonymous_id=f"a{n}") for n in range(20)])
    real_run = processor._Processor.run
    appended: list[int] = []

    def run_and_append(self: Any, conn: sa.Connection, rows: list[Any]) -> Any:
        batch = real_run(self, conn, rows)
        if not appended:
            impatient = sa.create_engine(log.engine.url, connect_args={"timeout": 0})
            try:  # "database is locked" at once if the batch held the lock
                with impatient.begin() as other:
                    other.exec_driver_sql("PRAGMA busy_timeout=0")
                    other.exec_driver_sql("BEGIN IMMEDIATE")
                    other.exec_driver_sql("ROLLBACK")
            finally:
                impatient.dispose()
            log.send(*[track("Page Viewed", anonymous_id=f"late{n}") for n in range(5)])
            appended.append(5)
        return batch

    monkeypatch.setattr(processor._Processor, "run", run_and_append)
    first = profiles.process_batch(log.engine, log.settings, limit=100)
    assert first is not None and first.events == 20  # the batch read before the appends
    assert log.process() == 5
    assert len(log.live_profiles()) == 25


def test_a_batch_whose_cursor_moved_meanwhile_is_applied_again(
    log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: when another writer of derived state (a second processor, a rebuild, an
    erasure) commits while a batch applies its events, the batch finds the cursor moved
    under the write lock, drops its work and its states in memory and applies the events
    again from what is stored: each event counted once."""
    if log.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL holds the cursor's row lock for the whole batch")
    sent = _shop(log, customers=30)
    proc = processor._Processor(log.settings)
    assert profiles.process_batch(log.engine, log.settings, limit=200, _proc=proc)
    real_run = processor._Processor.run
    raced: list[int] = []

    def run_then_race(self: Any, conn: sa.Connection, rows: list[Any]) -> Any:
        batch = real_run(self, conn, rows)
        if self is proc and not raced:
            raced.append(len(rows))
            # another processor takes the next batch and commits first
            assert profiles.process_batch(log.engine, log.settings, limit=50)
        return batch

    monkeypatch.setattr(processor._Processor, "run", run_then_race)
    report = profiles.process_batch(log.engine, log.settings, limit=200, _proc=proc)
    assert raced == [200]
    assert report is not None and report.events == 200  # the batch after the other one's
    monkeypatch.undo()
    log.process()
    state = snapshot(log.engine)
    live = [p for p in state["profiles"] if p["merged_into"] is None]
    assert sum(p["computed"]["events"] for p in live) == sent
    profiles.rebuild(log.engine, log.settings)
    assert snapshot(log.engine) == state


def _sequential(settings: Any) -> Any:
    return settings.model_copy(
        update={"processor": settings.processor.model_copy(update={"pipeline": False})}
    )


def _as_a_rebuild(log: Log, events: int) -> dict[str, Any]:
    """The stored state, after checking that it counts `events` once each and that a
    rebuild, one batch after the other, stores the same."""
    state = snapshot(log.engine)
    live = [p for p in state["profiles"] if p["merged_into"] is None]
    assert sum(p["computed"]["events"] for p in live) == events
    profiles.rebuild(log.engine, _sequential(log.settings), limit=5000)
    assert snapshot(log.engine) == state
    return state


def test_the_pipeline_writes_what_one_batch_after_another_writes(log: Log) -> None:
    """A batch is applied while the one before commits (`_Pipeline`); the stored
    rows are the same as with one batch after the other, with the same cursor."""
    sent = _shop(log)
    sequential = _sequential(log.settings)
    assert processor._drain(log.engine, sequential, processor._Processor(sequential), limit=97)
    one_by_one = snapshot(log.engine)
    assert profiles.rebuild(log.engine, log.settings, limit=97) == sent
    assert snapshot(log.engine) == one_by_one
    with log.engine.connect() as conn:
        cursor = conn.execute(
            sa.select(processor_cursors.c.event_id).where(processor_cursors.c.name == "main")
        ).scalar_one()
        assert cursor == conn.execute(sa.select(sa.func.max(events.c.id))).scalar_one()


def _overlapping(monkeypatch: pytest.MonkeyPatch, wait: float = 1.0) -> list[int]:
    """Make each pipelined write wait until the next batch is built (up to `wait` seconds):
    that batch reads the store before the one before it commits. Answers the writes that
    waited so."""
    real_run, real_write = processor._Processor.run, processor._write_unless_moved
    progress = threading.Condition()
    builds, writes, overlapped = [0], [0], []

    def run(self: Any, conn: sa.Connection, rows: list[Any]) -> Any:
        batch = real_run(self, conn, rows)
        with progress:
            builds[0] += 1
            progress.notify_all()
        return batch

    def write(engine: Any, proc: Any, rows: list[Any], batch: Any, *, found: Any) -> Any:
        with progress:
            writes[0] += 1
            if progress.wait_for(lambda: builds[0] > writes[0], timeout=wait):
                overlapped.append(writes[0])  # the next batch is built: now commit this one
        return real_write(engine, proc, rows, batch, found=found)

    monkeypatch.setattr(processor._Processor, "run", run)
    monkeypatch.setattr(processor, "_write_unless_moved", write)
    return overlapped


def test_a_batch_is_built_on_the_one_before_while_that_one_commits(
    log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each write waits until the next batch is built: that batch read the store before
    the one before it committed (identities, profiles and tally rows). What it stores is
    still what a rebuild stores, every event counted once."""
    sent = _shop(log, customers=40)
    overlapped = _overlapping(monkeypatch)
    proc = processor._Processor(log.settings)
    done = processor._drain(log.engine, log.settings, proc, limit=37)
    monkeypatch.undo()
    assert done == sent
    assert len(overlapped) > 10
    state = snapshot(log.engine)
    live = [p for p in state["profiles"] if p["merged_into"] is None]
    assert sum(p["computed"]["events"] for p in live) == sent
    assert state["event_tallies"] and state["identity_merges"]
    profiles.rebuild(log.engine, _sequential(log.settings), limit=5000)
    assert snapshot(log.engine) == state


def test_batches_of_other_customers_keep_only_the_batch_before_and_overlap(
    log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches that meet few customers of the batch before drop all states but that
    batch's, which may still be committing while the next is built. Each batch also meets
    customers of the batch before (a purchase, a login on another customer's device, a
    visitor who logs in: a merge) and one of long before (read from the store): what is
    stored is what a rebuild stores."""
    per_batch, batches = 60, 8
    for b in range(batches):
        messages = [identify(f"c{b}-{n}", f"dev{b}-{n}", plan=f"p{b}") for n in range(per_batch)]
        messages[0] = track(
            "Order Completed", user_id=f"c{b - 1}-11", properties={"revenue": 10, "category": "X"}
        )
        messages[1] = identify(f"c{b - 1}-12", f"dev{b - 1}-13", plan="x")  # two user ids
        messages[2] = track("Product Viewed", anonymous_id=f"dev{max(b - 3, 0)}-15")
        messages[3] = track("Page Viewed", anonymous_id=f"visitor{b}")  # a new visitor ...
        messages[4] = identify(f"c{b - 1}-16", f"visitor{b - 1}")  # ... who logs in later
        messages[5] = track("Page Viewed", anonymous_id=f"visitor{b - 2}")  # merged before
        log.send(*messages)
    overlapped = _overlapping(monkeypatch)
    proc = processor._Processor(log.settings)
    kept: list[int] = []
    real_keep_only = processor._Cache.keep_only

    def keep_only(self: Any, touched: Any) -> None:
        real_keep_only(self, touched)
        kept.append(len(self.states))

    monkeypatch.setattr(processor._Cache, "keep_only", keep_only)
    done = processor._drain(log.engine, log.settings, proc, limit=per_batch)
    monkeypatch.undo()
    assert done == per_batch * batches
    assert len(kept) == batches - 1 and all(0 < n <= per_batch + 4 for n in kept)
    assert overlapped == list(range(1, batches))  # every write but the last
    state = _as_a_rebuild(log, done)
    assert len(state["identity_merges"]) == batches - 1
    assert len(state["identity_conflicts"]) >= batches - 1


def test_while_the_ingest_appends_the_pipeline_waits_for_each_commit(
    log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingest's appends wait for the write lock, which an overlapping pipeline holds
    most of the time: while they come, each batch is read after the one before committed
    (and written by executemany)."""
    if log.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's appends take no lock the processor's writes hold")
    sent = _shop(log, customers=40)
    # Each write waits this long for a next batch that must not come (a batch of 37
    # events is built in a few milliseconds).
    overlapped = _overlapping(monkeypatch, wait=0.2)
    real_run = processor._Processor.run

    def run_while_appending(self: Any, conn: sa.Connection, rows: list[Any]) -> Any:
        with store.write_turn(log.engine, ingest=True):  # as the ingest's append does
            pass
        assert store.appending(log.engine) and not store.appending(log.engine, within=0)
        return real_run(self, conn, rows)

    monkeypatch.setattr(processor._Processor, "run", run_while_appending)
    done = processor._drain(log.engine, log.settings, processor._Processor(log.settings), limit=37)
    monkeypatch.undo()
    assert done == sent and overlapped == []
    state = snapshot(log.engine)
    profiles.rebuild(log.engine, _sequential(log.settings), limit=5000)
    assert snapshot(log.engine) == state


def test_a_pipelined_batch_that_finds_the_cursor_moved_is_built_again(
    log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another processor commits a batch while the pipeline's batch waits for the write
    lock: that batch, and the one built on it, are dropped with the cache and built again
    from the store. Each event counted once."""
    sent = _shop(log, customers=30)
    real_write = processor._write_unless_moved
    raced: list[int] = []
    racing = threading.Lock()  # the other processor's own write goes straight through

    def write(engine: Any, proc: Any, rows: list[Any], batch: Any, *, found: Any) -> Any:
        if len(raced) < 2 and found[1] >= 2 and racing.acquire(blocking=False):
            try:
                other = profiles.process_batch(log.engine, _sequential(log.settings), limit=50)
            finally:
                racing.release()
            assert other is not None
            raced.append(other.events)
        return real_write(engine, proc, rows, batch, found=found)

    monkeypatch.setattr(processor, "_write_unless_moved", write)
    proc = processor._Processor(log.settings)
    done = processor._drain(log.engine, log.settings, proc, limit=100)
    monkeypatch.undo()
    assert raced == [50, 50]
    assert done + sum(raced) == sent
    _as_a_rebuild(log, sent)


def test_a_failed_pipelined_write_commits_nothing_and_clears_the_cache(
    log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails raises out of the drain after the batch built on it; nothing of
    it is stored, the cache is cleared, and the next drain applies from the cursor."""
    sent = _shop(log, customers=30)
    real_write = processor._write_unless_moved
    calls: list[int] = []

    def write(engine: Any, proc: Any, rows: list[Any], batch: Any, *, found: Any) -> Any:
        calls.append(found[1])
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real_write(engine, proc, rows, batch, found=found)

    monkeypatch.setattr(processor, "_write_unless_moved", write)
    proc = processor._Processor(log.settings)
    with pytest.raises(RuntimeError, match="disk full"):
        processor._drain(log.engine, log.settings, proc, limit=100)
    assert proc.cache.states == {} and proc.cache.tallies == {} and proc.cache.seq is None
    with log.engine.connect() as conn:
        cursor = conn.execute(
            sa.select(processor_cursors.c.event_id).where(processor_cursors.c.name == "main")
        ).scalar_one()
        ids = conn.execute(sa.select(events.c.id).order_by(events.c.id)).scalars().all()
    assert cursor == ids[199]  # two batches of 100 committed, the third not
    monkeypatch.undo()
    assert processor._drain(log.engine, log.settings, proc, limit=100) == sent - 200
    _as_a_rebuild(log, sent)


def test_a_profile_merged_in_a_later_batch_keeps_no_master_data(log: Log) -> None:
    """A merged profile's row is a pointer to its survivor: its traits go, and so must what
    was derived from them (master data, problems, customer key), as when the merge happens
    in the batch that created it (a rebuild): a stale copy of her e-mail address and key
    stayed on the row."""
    log.send(identify(None, "a-1", email="anna@example.com", lastName="Muster", gender="x"))
    log.process()
    log.send(identify("u-1"))
    log.process()
    log.send(identify("u-1", "a-1"))
    log.process()
    survivor = log.profile_of("user_id", "u-1")
    incremental = snapshot(log.engine)
    (merged,) = [p for p in incremental["profiles"] if p["merged_into"] == survivor]
    assert merged["customer_key"] is None and merged["quality"] == []
    assert merged["masterdata"]["email"] is None and merged["masterdata"]["last_name"] is None
    (kept,) = [p for p in incremental["profiles"] if p["id"] == survivor]
    assert kept["masterdata"]["email"] == "anna@example.com" and kept["customer_key"]
    profiles.rebuild(log.engine, log.settings)
    assert snapshot(log.engine) == incremental


def test_events_after_the_newest_were_erased_are_still_processed(log: Log) -> None:
    """An erasure (or the processor's drop of an erased person's events) may delete the
    newest events of the log, behind the cursor. The next events must get ids above every
    id ever given, or they land behind the cursor and are never applied (SQLite gave the
    newest deleted id again)."""
    log.send(track("Product Viewed", user_id="u-1"))
    log.send(identify("u-2", email="erika@example.com"), track("Order Completed", user_id="u-2"))
    assert log.process() == 3
    privacy.request_erasure(
        log.engine, log.settings, kind="user_id", value="u-2", requested_by="test"
    )
    # After the erasure, her events sent again are dropped by the processor (suppressed)...
    log.send(track("Order Completed", user_id="u-2"))
    log.process()
    # ... and then, each time, the next events of others must still be applied.
    log.send(track("Product Viewed", user_id="u-1"), identify("u-3", email="max@example.com"))
    log.process()
    with log.engine.connect() as conn:
        counts = conn.execute(
            sa.select(profiles_table.c.computed).where(profiles_table.c.merged_into.is_(None))
        ).scalars()
        events_seen = sorted(computed["events"] for computed in counts)
        hers = conn.execute(sa.select(sa.func.count()).where(events.c.user_id == "u-2")).scalar()
    assert log.profile_of("user_id", "u-3") is not None
    assert events_seen == [1, 2]  # u-3's identify; u-1's two views
    assert hers == 0  # her event sent again was dropped, not left behind the cursor
