"""Fixtures of the privacy tests."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from tests.conftest import make_settings
from tests.profiles.conftest import Log


@pytest.fixture
def log(engine: Engine, db_url: str) -> Log:
    return Log(engine, make_settings(db_url))
