"""Fixtures of the feed tests: customers in the log, settings with a private exports folder,
credentials and the loopback address allowed (test servers listen there)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from closedloop.config import FeedSettings, Settings
from tests.conftest import make_settings
from tests.profiles.conftest import Log, identify


def feed_settings(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "local_dir": tmp_path / "exports",
        "staging_dir": tmp_path / "staging",
        "allowed_hosts": ("127.0.0.1", "::1", "localhost"),
        "secrets": {"ftp-pass": "s3cret-ftp", "sftp-pass": "s3cret-sftp", "hook": "hook-key"},
        "backoff_seconds": 0.01,
        "timeout_seconds": 10,
    }
    feeds = FeedSettings(**{**values, **overrides})
    return make_settings(db_url).model_copy(update={"feeds": feeds})


@dataclass
class Shop:
    log: Log
    settings: Settings

    def customer(
        self, n: int, *, consent: bool = True, gender: str = "w", plan: str = "gold", **extra: Any
    ) -> None:
        traits: dict[str, Any] = {
            "email": f"kunde{n}@example.de",
            "firstName": f"Erika{n}",
            "lastName": f"Muster{n}",
            "gender": gender,
            "phone": f"0351 12345{n:02d}",
            "address": {"street": f"Hauptstr. {n}", "postalCode": 1067, "city": "Dresden"},
            "plan": plan,
            "consent": {"crm_sync": consent},
            **extra,
        }
        self.log.send(identify(f"cust-{n}", **traits))
        self.log.process()


@pytest.fixture
def shop(engine: Engine, db_url: str, tmp_path: Path) -> Shop:
    settings = feed_settings(db_url, tmp_path)
    return Shop(Log(engine, settings), settings)


def gold_feed(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "gold",
        "source": {"condition": 'trait plan = "gold"'},
        "columns": [
            {"name": "customer_key", "source": "customer_key"},
            {"name": "salutation", "source": "masterdata.gender", "transforms": ["salutation"]},
            {"name": "last_name", "source": "masterdata.last_name"},
            {
                "name": "postal_code",
                "source": "trait.address.postalCode",
                "transforms": ["postal_code"],
            },
            {"name": "phone", "source": "masterdata.phone"},
        ],
        "format": {"type": "csv", "delimiter": ";"},
        "file_name": "gold-{date:%Y%m%d}",
        "destination": {"type": "local", "path": "crm", "checksum": True},
        **overrides,
    }
