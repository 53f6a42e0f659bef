"""Tables of the identity graph (created by migration 0003)."""

from __future__ import annotations

import sqlalchemy as sa

from closedloop.store import UTCDateTime, metadata

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# One row per identifier: `key` is `<kind>:<value>` (`u:` user id, `a:` anonymous id,
# `e:` e-mail, `p:` phone), the value normalised; each identifier belongs to one profile.
identities = sa.Table(
    "identities",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("profile_id", sa.String(40), nullable=False, index=True),
    sa.Column("first_seen_at", UTCDateTime(), nullable=False),
    sa.Column("event_id", sa.BigInteger(), nullable=False),
)

# Every merge: which profile went into which, through which kind of identifier, by which event.
identity_merges = sa.Table(
    "identity_merges",
    metadata,
    sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
    sa.Column("survivor_id", sa.String(40), nullable=False, index=True),
    sa.Column("merged_id", sa.String(40), nullable=False, index=True),
    sa.Column("via", sa.String(16), nullable=False),
    sa.Column("event_id", sa.BigInteger(), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
)

# Joins the rules refused (two user ids, the anonymous-id limit), one row per pair and
# identifier, counted: visible on both profiles.
identity_conflicts = sa.Table(
    "identity_conflicts",
    metadata,
    sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
    sa.Column("profile_id", sa.String(40), nullable=False, index=True),
    sa.Column("other_profile_id", sa.String(40), nullable=False, index=True),
    sa.Column("identity_key", sa.String(300), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("first_event_id", sa.BigInteger(), nullable=False),
    sa.Column("last_event_id", sa.BigInteger(), nullable=False),
    sa.Column("occurrences", sa.Integer(), nullable=False),
    sa.UniqueConstraint(
        "profile_id",
        "other_profile_id",
        "identity_key",
        "reason",
        name="uq_identity_conflicts_pair",
    ),
)

# Identifiers of erased people, as keyed hashes (`identity.suppression`): events carrying one
# are acknowledged and dropped, so an erased person is never re-created.
suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("erasure_id", sa.String(40), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

# Every re-keying of a profile's customer key (`closedloop privacy rotate-key`): a feed with
# a `previous_customer_key` column delivers the old key next to the new one once.
customer_key_changes = sa.Table(
    "customer_key_changes",
    metadata,
    sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
    sa.Column("profile_id", sa.String(40), nullable=False, index=True),
    sa.Column("old_key", sa.String(80), nullable=False),
    sa.Column("new_key", sa.String(80), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False, index=True),
    sa.Column("changed_at", UTCDateTime(), nullable=False),
)
