"""Customer-key rotation: a new secret re-keys every profile.

The operator sets a new `IDENTITY__CUSTOMER_KEY_SECRET` and a higher
`IDENTITY__CUSTOMER_KEY_VERSION`; from then on new keys carry the new version, and
`closedloop privacy rotate-key` (or the privacy job, daily) re-keys every profile whose key
has another version, from its e-mail address. Each change is kept in `customer_key_changes`,
so a feed with a `previous_customer_key` column delivers the old-to-new pairs once.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import clock
from closedloop.config import Settings
from closedloop.errors import InvalidInputError
from closedloop.identity import customer_key
from closedloop.identity._tables import customer_key_changes
from closedloop.privacy.audit import record
from closedloop.profiles import hold_derived_state
from closedloop.profiles._tables import profiles
from closedloop.store import begin_write

__all__ = ["rotate_customer_keys", "stale_keys"]

_CHUNK = 2000


def _secret(settings: Settings) -> bytes:
    secret = settings.identity.customer_key_secret or settings.secret_key
    if secret is None:
        raise InvalidInputError(
            "no secret for the customer key: set `CLOSEDLOOP_IDENTITY__CUSTOMER_KEY_SECRET`",
            field="identity.customer_key_secret",
        )
    return secret.get_secret_value().encode()


def _stale(version: int) -> sa.ColumnElement[bool]:
    return sa.and_(
        profiles.c.customer_key.is_not(None),
        sa.not_(profiles.c.customer_key.startswith(f"v{version}.", autoescape=True)),
    )


def stale_keys(engine: Engine, settings: Settings) -> int:
    """How many profiles still have a key of another version."""
    with engine.connect() as conn:
        stmt = sa.select(sa.func.count()).select_from(profiles)
        return int(
            conn.execute(stmt.where(_stale(settings.identity.customer_key_version))).scalar_one()
        )


def rotate_customer_keys(engine: Engine, settings: Settings, *, requested_by: str) -> int:
    """Re-key every profile whose key has another version; answer how many changed."""
    secret = _secret(settings)
    version = settings.identity.customer_key_version
    changed = 0
    while True:
        with begin_write(engine) as conn:
            hold_derived_state(conn, settings)  # processors drop the keys they keep in memory
            rows = conn.execute(
                sa.select(profiles.c.id, profiles.c.customer_key, profiles.c.masterdata)
                .where(_stale(version))
                .order_by(profiles.c.id)
                .limit(_CHUNK)
            ).all()
            now = clock.now()
            pairs = []
            for row in rows:
                email = (row.masterdata or {}).get("email")
                new = customer_key(email, secret=secret, version=version) if email else None
                conn.execute(
                    profiles.update().where(profiles.c.id == row.id).values(customer_key=new)
                )
                if new is not None:
                    pairs.append(
                        {
                            "profile_id": row.id,
                            "old_key": row.customer_key,
                            "new_key": new,
                            "version": version,
                            "changed_at": now,
                        }
                    )
            if pairs:
                conn.execute(customer_key_changes.insert(), pairs)
            changed += len(rows)
            if len(rows) < _CHUNK:
                record(
                    conn, requested_by[:100], "key_rotation", f"v{version}", {"profiles": changed}
                )
                return changed
