"""Column types shared by every domain, and the one `MetaData`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

__all__ = [
    "EPOCH",
    "MAX_ROW_ID",
    "JSONDocument",
    "UTCDateTime",
    "metadata",
    "parse_row_id",
    "to_epoch_us",
]

# SQLite has no time type: `UTCDateTime` keeps microseconds since 1970-01-01 UTC there, an
# integer that is exact, sorts and compares in SQL, and converts ten times faster than text.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)
# The largest row id either store holds (a signed 64-bit integer): larger cursors are refused.
MAX_ROW_ID = 2**63 - 1


def parse_row_id(text: str) -> int | None:
    """`text` as a row id (a cursor's part), or None: ASCII digits only (`str.isdigit` also
    holds for `²`, which `int` refuses), at most `MAX_ROW_ID`."""
    if len(text) > 19 or not (text.isascii() and text.isdigit()) or int(text) > MAX_ROW_ID:
        return None
    return int(text)


def to_epoch_us(value: datetime) -> int:
    """Microseconds since 1970-01-01 UTC of an aware datetime (the SQLite representation)."""
    return (value - EPOCH) // ONE_MICROSECOND


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

JSONDocument = sa.JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on both backends.

    PostgreSQL stores `timestamptz`; SQLite stores integer microseconds since the epoch (see
    `to_epoch_us`). Naive values are refused on the way in, so no local time slips in.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.BigInteger())
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"naive datetime `{value}`: closedloop stores only aware UTC times")
        if dialect.name == "sqlite":
            return to_epoch_us(value)
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, int):
            return EPOCH + value * ONE_MICROSECOND
        if not isinstance(value, datetime):  # pragma: no cover - drivers give datetimes
            raise TypeError(f"expected a datetime from the database, got `{value!r}`")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
