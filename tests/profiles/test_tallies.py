"""Event tallies: the processor keeps, per live profile and track event name, the count and
the newest times; they equal a recount from the log through every merge, batch size and
late event; migration 0012 fills them from the events already processed, and only those."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from closedloop import profiles, store
from closedloop.identity._tables import identities
from closedloop.ingest._tables import events
from closedloop.profiles._tables import event_tallies
from closedloop.profiles.tallies import MAX_TEXT, RECENT, facet, newest
from closedloop.store import to_epoch_us
from closedloop.store._migrate import _config
from tests.profiles.conftest import Log, identify, track
from tests.profiles.test_processor import _shop

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


Tallies = dict[tuple[str, str, str], tuple[int, list[int]]]


def stored(log: Log) -> Tallies:
    with log.engine.connect() as conn:
        return {
            (r.profile_id, r.event, r.facet): (r.total, r.recent)
            for r in conn.execute(sa.select(event_tallies))
        }


def recount(log: Log) -> Tallies:
    """The tallies counted again from the log: each track event under the profile that
    owns its user id, else its anonymous id, today; with its category's facet too."""
    with log.engine.connect() as conn:
        owner = dict(conn.execute(sa.select(identities.c.key, identities.c.profile_id)).all())
        found: dict[tuple[str, str, str], list[int]] = defaultdict(list)
        for e in conn.execute(sa.select(events).where(events.c.type == "track")):
            key = f"u:{e.user_id}" if e.user_id is not None else f"a:{e.anonymous_id}"
            if key in owner and e.event and len(e.event) <= MAX_TEXT:
                at = to_epoch_us(e.timestamp)
                found[(owner[key], e.event, "")].append(at)
                properties = e.payload.get("properties") or {}
                if "category" in properties:
                    kind = facet("category", properties["category"])
                    if kind is not None:
                        found[(owner[key], e.event, kind)].append(at)
    return {k: (len(v), newest(v)) for k, v in found.items()}


CATEGORIES: list[Any] = ["Laufschuhe", 5, 5.0, -0.0, 0, True, "x" * 201, ["a"], None, "5"]


def _views(user: str | None, anonymous: str | None, days: list[int]) -> list[dict[str, Any]]:
    return [
        track(
            "Product Viewed",
            user,
            anonymous,
            timestamp=(NOW - timedelta(days=d, seconds=i)).isoformat(),
            properties={"category": CATEGORIES[(d + i) % len(CATEGORIES)]},
        )
        for i, d in enumerate(days)
    ]


def _history(log: Log) -> None:
    """A shop's log and the cases that move tallies: anonymous views later joined by
    identify and alias, two profiles joined by e-mail, late (older) events after newer
    ones, more than RECENT views, and equal times."""
    _shop(log, customers=30)
    rng = random.Random(3)
    days = [rng.randint(0, 400) for _ in range(RECENT * 3)]
    log.send(*_views(None, "anon-1", days[:12]))
    log.send(*_views("runner", None, days[12:]))
    log.send(identify("runner", "anon-1"))
    log.send(*_views(None, "anon-1", [1, 1, 1]))  # after the join: the runner's
    log.send(*_views(None, "anon-2", [5, 500]), {"type": "alias", "previousId": "anon-2",
                                                 "userId": "runner"})  # fmt: skip
    log.send(identify("twin-a", None, email="twin@example.com"), *_views("twin-a", None, [3, 9]))
    log.send(*_views(None, "tb", [2, 2]), identify(None, "tb", email="TWIN@example.com"))
    log.send(*_views("late", None, [0, 1]), *_views("late", None, [300, 200, 100]))
    log.send(track("x" * 201, "late"), track("Seen", "late"))  # a name too long to tally


def test_processor_keeps_tallies_equal_to_a_recount(log: Log) -> None:
    _history(log)
    while profiles.process_batch(log.engine, log.settings, limit=37).events:
        pass
    found = stored(log)
    assert found == recount(log)
    runner = log.profile_of("user_id", "runner")
    total, recent = found[(runner, "Product Viewed", "")]
    assert total == RECENT * 3 + 3 + 2
    assert len(recent) == RECENT and recent == sorted(recent, reverse=True)
    # merged profiles keep no rows; every row belongs to a live profile
    assert {pid for pid, _, _ in found} <= set(log.live_profiles())
    twin = log.profile_of("user_id", "twin-a")
    assert log.profile_of("anonymous_id", "tb") == twin  # joined by e-mail
    assert found[(twin, "Product Viewed", "")][0] == 4
    facets = {kind for _, _, kind in found}
    # 5, 5.0 and 0/-0.0 are one number each; text "5" and true apart; long text, lists,
    # null and long event names not tallied
    assert {"", "category=s:Laufschuhe", "category=n:5.0", "category=n:0.0"} <= facets
    assert {"category=b:true", "category=s:5"} <= facets
    assert "category=s:" + "x" * 201 not in facets and "category=n:-0.0" not in facets
    assert not any("[" in kind or "None" in kind or "null" in kind for kind in facets)
    assert not any(len(name) > MAX_TEXT for _, name, _ in found)


def test_rebuild_writes_the_same_tallies(log: Log) -> None:
    _history(log)
    log.process()
    before = stored(log)
    assert before
    profiles.rebuild(log.engine, log.settings, limit=41)
    assert stored(log) == before


def test_migration_fills_tallies_from_processed_events_only(log: Log) -> None:
    _history(log)
    log.process()
    processed = stored(log)
    log.send(*_views("runner", None, [0, 0]), *_views("newcomer", None, [4]))  # not processed
    command.downgrade(_config(log.engine), "0011")
    with log.engine.connect() as conn:
        assert not sa.inspect(conn).has_table("event_tallies")
    store.upgrade(log.engine)
    assert stored(log) == processed
    log.process()
    assert stored(log) == recount(log)
    assert stored(log) != processed


@pytest.mark.parametrize("batch", [1, 500])
def test_merge_in_the_same_batch_as_the_events(log: Log, batch: int) -> None:
    log.send(*_views(None, "a1", [1, 2]), *_views("u1", None, [3]))
    log.send(identify("u1", "a1"), *_views(None, "a1", [0]))
    while profiles.process_batch(log.engine, log.settings, limit=batch).events:
        pass
    pid = log.profile_of("user_id", "u1")
    assert stored(log) == recount(log)
    assert stored(log)[(pid, "Product Viewed", "")][0] == 4
