"""Fixtures of the segment tests: a log, and every live profile's facts for the evaluator."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop.identity._tables import identities
from closedloop.ingest._tables import events
from closedloop.profiles._tables import profiles
from closedloop.segments import ProfileFacts
from closedloop.segments.compile import event_profile_key
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
        rows = conn.execute(
            sa.select(identities.c.profile_id, events).select_from(
                events.join(identities, identities.c.key == event_profile_key())
            )
        ).mappings()
        for r in rows:
            payload: Any = r["payload"]
            if r["profile_id"] in facts:
                facts[r["profile_id"]].events.append(
                    {
                        "id": r["id"],
                        "type": r["type"],
                        "event": r["event"],
                        "timestamp": r["timestamp"],
                        "payload": payload,
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
