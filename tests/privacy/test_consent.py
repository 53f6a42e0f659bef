"""Consent gates every activation (both backends): withdrawn one second before a scheduled
survey or feed, nothing goes out for her; opt-in and opt-out per purpose as set."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import clock, feeds, segments, surveys
from closedloop.config import ProcessorSettings, ProfileSettings, Settings, SurveySettings
from closedloop.profiles.consent import set_consent
from closedloop.profiles.read import consent_history
from closedloop.surveys._tables import survey_invitations
from tests.feeds.conftest import feed_settings
from tests.profiles.conftest import Log, identify

ALWAYS = {
    "start": "00:00",
    "end": "23:59",
    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
}


def _settings(db_url: str, tmp_path: Path, **modes: str) -> Settings:
    base = feed_settings(db_url, tmp_path)
    update: dict[str, Any] = {
        "surveys": SurveySettings(outbox_dir=tmp_path / "outbox", backoff_seconds=0),
        "processor": ProcessorSettings(embedded=False),
    }
    if modes:
        update["profiles"] = ProfileSettings(consent_modes=modes)  # type: ignore[arg-type]
    return base.model_copy(update=update)


@pytest.fixture(autouse=True)
def _reset_clock() -> Iterator[None]:
    yield
    clock.set_clock(None)


def _at(moment: datetime) -> None:
    clock.set_clock(lambda: moment)


def _customers(log: Log, consent: dict[str, bool] | None) -> None:
    for n in (1, 2):
        traits: dict[str, Any] = {
            "email": f"kunde{n}@example.de",
            "lastName": f"Muster{n}",
            "createdAt": "2026-11-22",
        }
        if consent is not None:
            traits["consent"] = consent
        log.send(identify(f"cust-{n}", **traits))
    log.process()


def test_survey_consent_withdrawn_one_second_before_sending(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    settings = _settings(db_url, tmp_path)
    log = Log(engine, settings)
    surveys.save_survey(
        engine,
        {"name": "nps", "min_delay_days": 3, "max_delay_days": 3, "window": ALWAYS},
        create=True,
    )
    _customers(log, {"surveys": True})
    assert surveys.evaluate(engine, settings) == 2
    with engine.connect() as conn:
        due = conn.execute(sa.select(sa.func.max(survey_invitations.c.due_at))).scalar_one()
    _at(due - timedelta(seconds=1))
    pid = log.profile_of("user_id", "cust-1") or ""
    set_consent(engine, settings, pid, {"surveys": False})
    _at(due)
    assert surveys.send_due(engine, settings) == 1
    mails = list((tmp_path / "outbox").glob("*.eml"))
    assert len(mails) == 1 and "kunde2@example.de" in mails[0].read_text()
    with engine.connect() as conn:
        states = dict(
            conn.execute(
                sa.select(survey_invitations.c.profile_id, survey_invitations.c.state)
            ).all()
        )
    assert states[pid] == "cancelled"
    history = consent_history(engine, pid)
    assert [(c.purpose, c.granted) for c in history][-1] == ("surveys", False)


def test_feed_consent_withdrawn_one_second_before_the_scheduled_run(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    settings = _settings(db_url, tmp_path)
    log = Log(engine, settings)
    _customers(log, {"crm_sync": True})
    feeds.save_feed(
        engine,
        {
            "name": "crm",
            "source": {"condition": "trait email is present"},
            "columns": [{"name": "email", "source": "masterdata.email"}],
            "format": {"type": "csv"},
            "destination": {"type": "local", "path": "crm"},
            "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
        },
        create=True,
    )
    for shipped in feeds.SHIPPED_FEEDS:
        feeds.delete_feed(engine, shipped["name"])
    assert feeds.schedule_due(engine) == 0  # sets the next firing
    next_run = feeds.get_feed(engine, "crm").next_run_at
    assert next_run is not None
    _at(next_run - timedelta(seconds=1))
    set_consent(engine, settings, log.profile_of("user_id", "cust-1") or "", {"crm_sync": False})
    _at(next_run)
    assert feeds.schedule_due(engine) == 1
    (run,) = feeds.execute_due(engine, settings)
    assert run.state == "succeeded" and run.rows == 1
    path = Path(settings.feeds.local_dir) / "crm" / str(run.file_name)
    rows = list(csv.DictReader(io.StringIO(path.read_text("utf-8"))))
    assert rows == [{"email": "kunde2@example.de"}]


def test_opt_in_and_opt_out_purposes(engine: Engine, db_url: str, tmp_path: Path) -> None:
    settings = _settings(db_url, tmp_path)
    log = Log(engine, settings)
    _customers(log, None)  # nobody said anything
    surveys.save_survey(engine, {"name": "nps", "window": ALWAYS}, create=True)
    assert surveys.evaluate(engine, settings) == 0  # surveys are opt-in by default
    tree = "consent analytics"
    now = clock.now()
    assert segments.preview(engine, settings, tree, now=now).count == 2  # opt-out
    assert segments.preview(engine, settings, "consent marketing", now=now).count == 0
    set_consent(engine, settings, log.profile_of("user_id", "cust-2") or "", {"analytics": False})
    assert segments.preview(engine, settings, tree, now=now).count == 1

    relaxed = _settings(db_url, tmp_path, surveys="opt_out", analytics="opt_in")
    assert segments.preview(engine, relaxed, tree, now=now).count == 0
    assert surveys.evaluate(Log(engine, relaxed).engine, relaxed) == 0  # decided once already
    log.send(identify("cust-3", email="kunde3@example.de", createdAt="2026-11-22"))
    log.process()
    assert surveys.evaluate(engine, relaxed) == 1  # opt-out: invited without a statement
