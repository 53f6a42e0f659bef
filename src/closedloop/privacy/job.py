"""The privacy job inside `closedloop serve` and `closedloop worker`: resumes interrupted
erasures every `PRIVACY__POLL_SECONDS`; once a day applies retention and re-keys profiles
left with a customer key of an older version."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Engine

from closedloop import clock
from closedloop.config import Settings
from closedloop.privacy.erasure import resume_erasures
from closedloop.privacy.keys import rotate_customer_keys, stale_keys
from closedloop.privacy.retention import apply_retention, last_retention
from closedloop.runtime import PeriodicLoop

__all__ = ["PrivacyRunner", "run_privacy_once"]

_DAY = timedelta(days=1)


def run_privacy_once(engine: Engine, settings: Settings) -> None:
    resume_erasures(engine, settings)
    last = last_retention(engine)
    if last is None or clock.now() - last >= _DAY:
        apply_retention(engine, settings)
        if stale_keys(engine, settings):
            rotate_customer_keys(engine, settings, requested_by="privacy-job")


class PrivacyRunner(PeriodicLoop):
    name = "closedloop-privacy"

    def __init__(self, engine: Engine, settings: Settings) -> None:
        super().__init__(settings.privacy.poll_seconds)
        self._engine = engine
        self._settings = settings

    def run_once(self) -> None:
        run_privacy_once(self._engine, self._settings)
