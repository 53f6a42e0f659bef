"""Fixtures of the segment tests: a log, and every live profile's facts for the evaluator."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop.identity._tables import identities
from closedloop.ingest._tables import events
from closedloop.profiles._tables import event_attributions, profiles
from closedloop.segments import ProfileFacts
from tests.conftest import make_settings
from tests.profiles.conftest import Log


@pytest.fixture
def log(engine: Engine, db_url: str) -> Log:
    return Log(engine, make_settings(db_url))


def all_facts(engine: Engine) -> dict[str, ProfileFacts]:
    with engine.connect() as conn:
        facts = {
            r.id: ProfileFacts(traits=r.traits, consent=r.consent, derived=r.derived)
            for r in conn.execute(
                sa.select(
                    profiles.c.id, profiles.c.traits, profiles.c.consent, profiles.c.derived
                ).where(profiles.c.merged_into.is_(None))
            )
        }
        # Attributed as the processor applies events, written out here independently of
        # the SQL under test: the profile it recorded the event for, else the owner of the
        # event's user id, else of its anonymous id.
        owner = dict(conn.execute(sa.select(identities.c.key, identities.c.profile_id)).all())
        recorded = dict(
            conn.execute(
                sa.select(event_attributions.c.event_id, event_attributions.c.profile_id)
            ).all()
        )
        for r in conn.execute(sa.select(events).order_by(events.c.id)).mappings():
            key = f"u:{r['user_id']}" if r["user_id"] is not None else f"a:{r['anonymous_id']}"
            pid = recorded.get(r["id"], owner.get(key))
            if pid in facts:
                facts[pid].events.append(
                    {
                        "id": r["id"],
                        "type": r["type"],
                        "event": r["event"],
                        "timestamp": r["timestamp"],
                        "payload": r["payload"],
                    }
                )
    return facts


def resolver(engine: Engine) -> Any:
    """`in segment NAME` for the evaluator: the stored segment's tree."""
    from closedloop.segments import tree_of

    def resolve(name: str) -> dict[str, Any]:
        with engine.connect() as conn:
            return tree_of(conn, name)

    return resolve


@pytest.fixture
def quiet_client(engine: Engine, db_url: str) -> Any:
    """The app without its background processor and segment refresher: tests that move the
    clock or count entries and exits drive processing and refreshes themselves."""
    from fastapi.testclient import TestClient

    from closedloop.config import ProcessorSettings
    from closedloop.web import create_app

    settings = make_settings(db_url).model_copy(
        update={"processor": ProcessorSettings(embedded=False)}
    )
    with TestClient(create_app(settings, engine=engine)) as client:
        yield client
