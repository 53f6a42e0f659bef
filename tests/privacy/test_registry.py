"""The registry classifies every table of the migrated store, on both backends: a new table
without a decision (personal data or not, and if so its erase and export handlers) fails."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop.privacy import REGISTRY
from closedloop.store import metadata


def test_every_table_is_classified(engine: Engine) -> None:
    stored = set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    classified = {str(entry.table.name) for entry in REGISTRY}
    assert stored - classified == set(), "classify these tables in privacy/registry.py"
    assert classified - stored == set()
    assert {str(t) for t in metadata.tables} <= classified


def test_personal_tables_have_both_handlers() -> None:
    for entry in REGISTRY:
        if entry.personal:
            assert entry.erase is not None and entry.export is not None, entry.table.name
        assert entry.note, entry.table.name
    names = [str(entry.table.name) for entry in REGISTRY]
    assert len(names) == len(set(names))
    # the subject is found through identities and profiles: they are erased last
    assert names.index("identities") > names.index("events")
    personal = [str(entry.table.name) for entry in REGISTRY if entry.personal]
    assert personal[-2:] == ["identities", "profiles"]
