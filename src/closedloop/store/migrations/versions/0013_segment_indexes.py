"""Indexes for segments: `latest nps` as an index range (an expression index on the latest
NPS answer the processor keeps on each profile, `computed.nps = [score, at_us, event_id]`,
with that answer filled in from the processed log for profiles written before the processor
kept it), segment members by profile (an incremental refresh reads the memberships of the
profiles written since, erasure and export a person's), each segment's member count, the
profiles a batch wrote with their ids, and the profile id in the mood indexes (a count that
combines them with the event tallies reads no table row).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# The expressions must be the ones `closedloop.segments.compile.nps_number` compiles, character
# for character on SQLite (its planner matches indexed expressions literally). The score
# leads (every `latest nps` compares it), its time follows (`within N days`), and
# `merged_into` rides along, so a count of live profiles never reads the table rows; so does
# the id, so the members' ids come from the index alone (to meet the event tallies).
_SQLITE = "json_extract(computed, '$.nps[0]'), json_extract(computed, '$.nps[1]'), merged_into, id"
_POSTGRES = (
    "(((computed -> 'nps') ->> 0)::double precision), "
    "(((computed -> 'nps') ->> 1)::bigint), merged_into, id"
)
# Migration 0011's mood indexes, with the id as well (same reason).
_MOOD_SQLITE = {
    "ix_profiles_mood_k": "json_extract(derived, '$.mood_k'), merged_into",
    "ix_profiles_mood_churn": "json_extract(derived, '$.mood_churn'), merged_into",
}
_MOOD_POSTGRES = {
    "ix_profiles_mood_k": "((derived ->> 'mood_k')::double precision), merged_into",
    "ix_profiles_mood_churn": "((derived ->> 'mood_churn')::bigint), merged_into",
}
# Every processed NPS answer with a score from 0 to 10 (as `profiles.state._take_nps` takes
# them), with the profile its user id (else anonymous id) belongs to.
_SELECT = """
SELECT i.profile_id, {score}, {time}, e.id
FROM events e
JOIN identities i ON i.key = CASE WHEN e.user_id IS NOT NULL THEN 'u:' || e.user_id
                                  ELSE 'a:' || e.anonymous_id END
WHERE e.type = 'track'
  AND e.event IN ('NPS Answered', 'NPS Survey Answered', 'NPS Survey Answer Changed')
  AND {valid} AND {processed}
"""
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_PAGE = 2000


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.execute(f"CREATE INDEX ix_profiles_nps ON profiles ({_POSTGRES if pg else _SQLITE})")
    for name, expression in (_MOOD_POSTGRES if pg else _MOOD_SQLITE).items():
        op.drop_index(name, table_name="profiles")
        op.execute(f"CREATE INDEX {name} ON profiles ({expression}, id)")
    op.create_index("ix_segment_members_profile_id", "segment_members", ["profile_id", "segment"])
    # The profiles a batch wrote, with their ids from the index alone.
    op.drop_index("ix_profiles_processed_seq", table_name="profiles")
    op.create_index("ix_profiles_processed_seq", "profiles", ["processed_seq", "id"])
    op.add_column(
        "segments", sa.Column("members", sa.BigInteger(), nullable=False, server_default="0")
    )
    op.execute(
        "UPDATE segments SET members = "
        "(SELECT count(*) FROM segment_members m WHERE m.segment = segments.name)"
    )
    _fill(op.get_bind())


def _fill(conn: sa.Connection) -> None:
    pg = conn.dialect.name == "postgresql"
    # PostgreSQL: hold the processor's cursor (its batches lock it too) until this commits.
    query = "SELECT txid, event_id FROM processor_cursors WHERE name = 'main'"
    cursor = conn.execute(sa.text(query + (" FOR UPDATE" if pg else ""))).first()
    if cursor is None:
        return
    if pg:
        parts = {
            "score": "(e.payload #>> '{properties,score}')::double precision",
            "time": "(extract(epoch FROM e.timestamp) * 1000000)::bigint",
            # (a CASE: PostgreSQL does not promise to test the type before the cast)
            "valid": "CASE WHEN jsonb_typeof(e.payload #> '{properties,score}') = 'number' "
            "THEN (e.payload #>> '{properties,score}')::double precision END BETWEEN 0 AND 10",
            "processed": "(e.txid, e.id) <= (:txid, :event_id)",
        }
    else:
        parts = {
            "score": "json_extract(e.payload, '$.properties.score')",
            "time": "e.timestamp",
            "valid": "json_type(e.payload, '$.properties.score') IN ('integer', 'real') "
            "AND json_extract(e.payload, '$.properties.score') BETWEEN 0 AND 10",
            "processed": "e.id <= :event_id",
        }
    latest: dict[str, list[Any]] = {}
    for pid, score, at, event_id in conn.execute(
        sa.text(_SELECT.format(**parts)), {"txid": cursor.txid, "event_id": cursor.event_id}
    ):
        # PostgreSQL gives every score as a float; keep whole numbers whole, as sent.
        value = int(score) if float(score).is_integer() else float(score)
        if pid not in latest or (at, event_id) >= (latest[pid][1], latest[pid][2]):
            latest[pid] = [value, int(at), int(event_id)]
    ids = sorted(latest)
    update = sa.text("UPDATE profiles SET computed = :computed WHERE id = :pid").bindparams(
        sa.bindparam("computed", type_=_JSON)
    )
    for start in range(0, len(ids), _PAGE):
        page = ids[start : start + _PAGE]
        rows = conn.execute(
            sa.text("SELECT id, computed FROM profiles WHERE id IN :ids")
            .bindparams(sa.bindparam("ids", expanding=True))
            .columns(sa.column("id", sa.String()), sa.column("computed", _JSON)),
            {"ids": page},
        )
        changed = []
        for pid, document in rows:
            kept, found = document.get("nps"), latest[pid]
            if kept is None or (found[1], found[2]) > (kept[1], kept[2]):
                changed.append({"pid": pid, "computed": {**document, "nps": found}})
        if changed:
            conn.execute(update, changed)


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    for name, expression in (_MOOD_POSTGRES if pg else _MOOD_SQLITE).items():
        op.drop_index(name, table_name="profiles")
        op.execute(f"CREATE INDEX {name} ON profiles ({expression})")
    op.drop_index("ix_profiles_processed_seq", table_name="profiles")
    op.create_index("ix_profiles_processed_seq", "profiles", ["processed_seq"])
    op.drop_column("segments", "members")
    op.drop_index("ix_segment_members_profile_id", table_name="segment_members")
    op.drop_index("ix_profiles_nps", table_name="profiles")
