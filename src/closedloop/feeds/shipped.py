"""The two feeds of the use case, shipped with every new store (migration 0006)."""

from __future__ import annotations

from typing import Any

__all__ = ["SHIPPED_FEEDS"]

SHIPPED_FEEDS: list[dict[str, Any]] = [
    {
        "name": "mood-keys",
        "description": "Daily: the customer keys of the positive and the negative segment.",
        "source": {"segments": ["positive", "negative"]},
        "mode": "full",
        "columns": [
            {"name": "customer_key", "source": "customer_key"},
            {"name": "segment", "source": "segments"},
            {
                "name": "since",
                "source": "segment.entered_at",
                "transforms": [{"date": "%Y-%m-%d"}],
            },
        ],
        "format": {"type": "csv", "delimiter": ";", "encoding": "utf-8"},
        "file_name": "mood-keys-{date:%Y%m%d}",
        "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
        "destination": {"type": "local", "path": "crm", "checksum": True},
        "purpose": "crm_sync",
    },
    {
        "name": "crm-masterdata",
        "description": "Daily: master data of known customers with consent for CRM sync "
        "(changes since the last run, with upsert and delete).",
        "mode": "delta",
        "columns": [
            {"name": "customer_key", "source": "customer_key"},
            {
                "name": "salutation",
                "source": "masterdata.gender",
                "transforms": [{"salutation": "de"}],
            },
            {"name": "first_name", "source": "masterdata.first_name"},
            {"name": "last_name", "source": "masterdata.last_name"},
            {"name": "street", "source": "masterdata.street"},
            {"name": "postal_code", "source": "masterdata.postal_code"},
            {"name": "city", "source": "masterdata.city"},
            {"name": "email", "source": "masterdata.email"},
            {"name": "phone", "source": "masterdata.phone"},
            {"name": "mood", "source": "mood.label"},
            {"name": "nps", "source": "nps.score"},
        ],
        "format": {"type": "csv", "delimiter": ";", "encoding": "utf-8-sig"},
        "file_name": "crm-masterdata-{date:%Y%m%d}",
        "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
        "destination": {"type": "local", "path": "crm", "checksum": True},
        "purpose": "crm_sync",
    },
]
