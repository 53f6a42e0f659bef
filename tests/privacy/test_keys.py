"""The customer key is keyed: 10,000 synthetic e-mails match no unkeyed hash, the secret is in
no row and no log line; a new key version re-keys every profile (both backends)."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from closedloop import privacy
from closedloop.identity import customer_key
from closedloop.identity._tables import customer_key_changes
from closedloop.profiles._tables import profiles
from tests.privacy.test_erasure import _dump
from tests.profiles.conftest import Log, identify

SECRET = b"test-secret-" + b"y" * 20


def test_ten_thousand_keys_match_no_unkeyed_hash() -> None:
    emails = [f"kunde{n}@beispiel{n % 97}.de" for n in range(10_000)]
    keys = {customer_key(e, secret=SECRET)[3:] for e in emails}
    assert len(keys) == 10_000
    unkeyed = set()
    for e in emails:
        for algorithm in ("sha256", "sha1", "md5"):
            unkeyed.add(hashlib.new(algorithm, e.encode()).hexdigest())
            unkeyed.add(hashlib.new(algorithm, e.upper().encode()).hexdigest())
    assert keys.isdisjoint(unkeyed)
    assert all(not k.startswith(u[:20]) for k in list(keys)[:50] for u in list(unkeyed)[:50])


def test_secret_in_no_row_or_log_and_rotation_rekeys_all(
    log: Log, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for n in range(300):
        log.send(identify(f"c-{n}", email=f"Kunde{n}@Example.de", phone=f"0351 {n:07d}"))
    log.send(identify("no-mail", firstName="Ohne"))
    log.process()
    with engine.connect() as conn:
        before = dict(conn.execute(sa.select(profiles.c.id, profiles.c.customer_key)).all())
    assert sum(1 for k in before.values() if k and k.startswith("v1.")) == 300
    expected = customer_key("kunde7@example.de", secret=SECRET)
    assert expected in before.values()

    settings = log.settings.model_copy(
        update={
            "identity": log.settings.identity.model_copy(
                update={
                    "customer_key_version": 2,
                    "customer_key_secret": SecretStr("a-new-secret-" + "z" * 20),
                }
            )
        }
    )
    assert privacy.stale_keys(engine, settings) == 300
    assert privacy.rotate_customer_keys(engine, settings, requested_by="test") == 300
    assert privacy.stale_keys(engine, settings) == 0
    with engine.connect() as conn:
        after = dict(conn.execute(sa.select(profiles.c.id, profiles.c.customer_key)).all())
        pairs = conn.execute(sa.select(customer_key_changes)).all()
    assert len(pairs) == 300
    assert all(k is None or k.startswith("v2.") for k in after.values())
    assert {p.old_key for p in pairs} == {k for k in before.values() if k}
    assert all(after[p.profile_id] == p.new_key for p in pairs)
    new_secret = b"a-new-secret-" + b"z" * 20
    assert customer_key("kunde7@example.de", secret=new_secret, version=2) in after.values()

    # new profiles get the new version straight away
    log.settings = settings
    log.send(identify("late", email="spaet@example.de"))
    log.process()
    with engine.connect() as conn:
        late = (
            conn.execute(sa.select(profiles.c.customer_key).where(profiles.c.user_ids.is_not(None)))
            .scalars()
            .all()
        )
    assert customer_key("spaet@example.de", secret=new_secret, version=2) in late

    dump = str(_dump(engine))
    for secret in ("test-secret-", "a-new-secret-"):
        assert secret not in dump
        assert secret not in caplog.text


def test_feed_delivers_the_old_to_new_mapping_once(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    from closedloop import feeds
    from tests.feeds.conftest import feed_settings

    settings = feed_settings(db_url, tmp_path)
    log = Log(engine, settings)
    crm = {"crm_sync": True}
    log.send(
        identify("c-1", email="eins@example.de", consent=crm),
        identify("c-2", email="zwei@example.de", consent=crm),
    )
    log.process()
    feeds.save_feed(
        engine,
        {
            "name": "keys",
            "columns": [
                {"name": "key", "source": "customer_key"},
                {"name": "old_key", "source": "previous_customer_key"},
            ],
            "format": {"type": "csv"},
            "file_name": "keys-{date:%Y%m%d%H%M%S%f}",
            "destination": {"type": "local", "path": "crm"},
        },
        create=True,
    )

    def rows() -> list[dict[str, str]]:
        run = feeds.run_now(engine, settings, "keys")
        assert run.state == "succeeded", run.error
        path = Path(settings.feeds.local_dir) / "crm" / str(run.file_name)
        return list(csv.DictReader(io.StringIO(path.read_text("utf-8"))))

    before = rows()
    assert [r["old_key"] for r in before] == ["", ""]
    v2 = settings.model_copy(
        update={"identity": settings.identity.model_copy(update={"customer_key_version": 2})}
    )
    assert privacy.rotate_customer_keys(engine, v2, requested_by="test") == 2
    after = rows()
    assert {r["old_key"] for r in after} == {r["key"] for r in before}
    assert all(r["key"].startswith("v2.") and r["key"][3:] == r["old_key"][3:] for r in after)
    assert [r["old_key"] for r in rows()] == ["", ""]  # delivered once
