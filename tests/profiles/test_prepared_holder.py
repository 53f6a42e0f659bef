"""PostgreSQL: a prepared transaction (two-phase commit) holds the readable horizon like an
open session, and has no session: it is named by its `gid`. The shared test server allows
no prepared transaction (`max_prepared_transactions = 0`, set only at start), so this runs
on a cluster of its own (`tests/pgcluster.py`)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

from closedloop import ingest, profiles, store
from closedloop.config import IngestSettings
from closedloop.ingest.log import append, oldest_open_transaction
from tests.conftest import IN_CI, POSTGRES_URL, make_settings
from tests.pgcluster import ClusterUnavailableError, private_cluster
from tests.profiles.conftest import RECEIVED, track

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    if not POSTGRES_URL and not IN_CI:
        pytest.skip("set CLOSEDLOOP_TEST_POSTGRES_URL to run PostgreSQL cases")
    try:
        with private_cluster("max_prepared_transactions=4") as url:
            yield url
    except ClusterUnavailableError as exc:
        pytest.skip(f"no cluster of its own: {exc}")


def _append(engine: sa.Engine, source_id: int, *messages: dict[str, object]) -> None:
    rows = [
        ingest.normalise_message(
            m, call_type=None, limits=IngestSettings(), received_at=RECEIVED, sent_at=None
        ).as_tuple(source_id)
        for m in messages
    ]
    with engine.begin() as conn:
        append(conn, rows)


def test_a_prepared_transaction_holding_events_is_named_by_its_gid(cluster_url: str) -> None:
    engine = store.create_store_engine(cluster_url)
    settings = make_settings(cluster_url)
    prepared = psycopg.connect(
        sa.make_url(cluster_url).set(drivername="postgresql").render_as_string(False),
        autocommit=True,
    )
    try:
        store.upgrade(engine)
        source_id = ingest.add_source(engine, "shop", kind="web").source.id
        _append(engine, source_id, track("Page Viewed", anonymous_id="first"))
        assert profiles.process_available(engine, settings) == 1
        # A transaction with an id, prepared and left (as a transaction manager's would be
        # between its two phases).
        prepared.execute("BEGIN")
        prepared.execute("SELECT pg_current_xact_id()")
        prepared.execute("PREPARE TRANSACTION 'nightly-2pc'")
        _append(engine, source_id, *[track("Page Viewed", anonymous_id=f"a{n}") for n in range(3)])
        assert profiles.process_available(engine, settings) == 0
        lag = profiles.lag(engine)
        assert (lag.events, lag.held) == (3, 3)
        assert lag.holder is not None
        assert lag.holder.pid is None
        assert lag.holder.application == "prepared transaction nightly-2pc"
        assert (lag.holder.user, lag.holder.database) == ("postgres", "postgres")
        assert lag.holder.state == "prepared"
        assert lag.holder.since is not None and lag.held_seconds >= 0
        assert lag.holder.parts == [
            "postgres",
            "prepared transaction nightly-2pc",
            "postgres",
            "prepared",
        ]
        prepared.execute("ROLLBACK PREPARED 'nightly-2pc'")
        assert profiles.process_available(engine, settings) == 3
        lag = profiles.lag(engine)
        assert (lag.events, lag.held, lag.holder) == (0, 0, None)
        with engine.connect() as conn:
            assert oldest_open_transaction(conn) is None
    finally:
        left = prepared.execute("SELECT 1 FROM pg_prepared_xacts WHERE gid = 'nightly-2pc'")
        if left.fetchone():
            prepared.execute("ROLLBACK PREPARED 'nightly-2pc'")
        prepared.close()
        engine.dispose()
