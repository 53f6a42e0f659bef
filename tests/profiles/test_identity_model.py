"""A hypothesis state machine: random identify / alias / track sequences, processed in random
batches, against a small reference model of who is who (a union of identifier groups)."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from closedloop import profiles, store
from closedloop.identity._tables import identities
from closedloop.profiles import read
from closedloop.profiles._tables import profiles as profiles_table
from tests.conftest import IN_CI, POSTGRES_URL, _postgres_schema_url, make_settings
from tests.profiles.conftest import Log, identify, track

USERS = st.sampled_from([f"user-{n}" for n in range(4)])
ANONS = st.sampled_from([f"anon-{n}" for n in range(6)])
EMAILS = st.sampled_from([f"person{n}@example.com" for n in range(3)])
# Spellings of two numbers (E.164 the key); `12` is no number at all and joins nothing.
PHONES = st.sampled_from(
    [
        ("0351 1234567", "+493511234567"),
        ("+49 351 123 45 67", "+493511234567"),
        ("(0351) 123 45 67", "+493511234567"),
        ("0171 2345678", "+491712345678"),
        ("+49 171 2345678", "+491712345678"),
        ("12", None),
    ]
)


def _contact_keys(email: str | None, phone: tuple[str, str | None] | None) -> list[str]:
    """The keys an e-mail and a phone add, in the order the rules try them."""
    keys = [f"e:{email}"] if email else []
    if phone and phone[1]:
        keys.append(f"p:{phone[1]}")
    return keys


def _contact_traits(email: str | None, phone: tuple[str, str | None] | None) -> dict[str, str]:
    traits = {"email": email} if email else {}
    if phone:
        traits["phone"] = phone[0]
    return traits


class Model:
    """Who is who, by the rules, kept as groups of identifier keys."""

    def __init__(self, max_anonymous_ids: int = 100) -> None:
        self.max_anonymous_ids = max_anonymous_ids
        self.group: dict[str, int] = {}
        self.members: dict[int, set[str]] = {}
        self.merged: dict[int, int] = {}  # a group joined into another: into which
        self.next = 0

    def owner(self, key: str) -> int | None:
        return self.group.get(key)

    def users(self, gid: int) -> set[str]:
        return {k for k in self.members[gid] if k.startswith("u:")}

    def anonymous(self, gid: int) -> int:
        return sum(1 for k in self.members[gid] if k.startswith("a:"))

    def add(self, key: str, gid: int) -> None:
        self.group[key] = gid
        self.members[gid].add(key)

    def new(self) -> int:
        self.next += 1
        self.members[self.next] = set()
        return self.next

    def union(self, keep: int, gone: int) -> None:
        for key in self.members.pop(gone):
            self.add(key, keep)
        self.merged[gone] = keep

    def final(self, gid: int) -> int:
        while gid in self.merged:
            gid = self.merged[gid]
        return gid

    def event(self, user: str | None, others: list[str], previous: str | None = None) -> int:
        """Apply an event with `user` and the other identifier keys; the group it goes to."""
        primary = self.owner(f"u:{user}") if user else None
        if previous is not None:
            prev_key = f"u:{previous}" if self.owner(f"u:{previous}") else f"a:{previous}"
            prev_owner = self.owner(prev_key)
            if prev_owner is None:
                others = [prev_key, *others]
            elif primary is None:
                primary = prev_owner
            elif prev_owner != primary:
                self.union(primary, prev_owner)
        if primary is None:
            for key in others:
                found = self.owner(key)
                if found is not None and not (user and self.users(found)):
                    primary = found
                    break
        if primary is None:
            primary = self.new()
        if user and self.owner(f"u:{user}") is None:
            self.add(f"u:{user}", primary)
        limit = self.max_anonymous_ids
        for key in others:
            found = self.owner(key)
            if found is None:
                if not (key.startswith("a:") and self.anonymous(primary) >= limit):
                    self.add(key, primary)  # else refused: a kiosk
            elif found == primary or (self.users(primary) and self.users(found)):
                continue
            elif self.anonymous(primary) + self.anonymous(found) <= limit:
                self.union(primary, found)
        return primary


class IdentityMachine(RuleBasedStateMachine):
    backend = "sqlite"
    max_anonymous_ids = 100  # the default: never reached here

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.schema: str | None = None
        if self.backend == "sqlite":
            url = f"sqlite:///{self.dir / 'model.db'}"
        else:
            assert POSTGRES_URL
            self.schema = "t_" + secrets.token_hex(6)
            admin = sa.create_engine(_postgres_schema_url(POSTGRES_URL, "public"))
            with admin.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))
            admin.dispose()
            url = _postgres_schema_url(POSTGRES_URL, self.schema)
        self.engine = store.create_store_engine(url, sqlite_synchronous="OFF")
        store.upgrade(self.engine)
        config = make_settings(url)
        identity = config.identity.model_copy(update={"max_anonymous_ids": self.max_anonymous_ids})
        self.log = Log(self.engine, config.model_copy(update={"identity": identity}))
        self.model = Model(self.max_anonymous_ids)
        self.pending: list[dict[str, Any]] = []
        self.processed = True
        self.placed: dict[str, int] = {}  # message id -> the model's group it went to
        self.messages = 0

    def _send(self, message: dict[str, Any], group: int) -> None:
        self.messages += 1
        message_id = f"m{self.messages}"
        self.pending.append({"messageId": message_id, **message})
        self.placed[message_id] = group
        self.processed = False

    @rule(
        in_context=st.booleans(),
        user=st.none() | USERS,
        anon=ANONS,
        email=st.none() | EMAILS,
        phone=st.none() | PHONES,
    )
    def identify(
        self,
        in_context: bool,
        user: str | None,
        anon: str,
        email: str | None,
        phone: tuple[str, str | None] | None,
    ) -> None:
        """An identify with e-mail and phone in its traits, or (`in_context`) a form or a
        call on a device: a track with them in `context.traits`."""
        traits = _contact_traits(email, phone)
        if in_context:
            message = track("Form Submitted", user, anon, context={"traits": traits})
        else:
            message = identify(user, anon, **traits)
        others = [*_contact_keys(email, phone), f"a:{anon}"]
        self._send(message, self.model.event(user, others))

    @rule(user=st.none() | USERS, anon=st.none() | ANONS)
    def track(self, user: str | None, anon: str | None) -> None:
        if user is None and anon is None:
            return
        group = self.model.event(user, [f"a:{anon}"] if anon else [])
        self._send(track("Page Viewed", user, anon), group)

    @rule(previous=ANONS, user=USERS)
    def alias(self, previous: str, user: str) -> None:
        group = self.model.event(user, [], previous=previous)
        self._send({"type": "alias", "previousId": previous, "userId": user}, group)

    @rule()
    def process(self) -> None:
        if self.pending:
            self.log.send(*self.pending)
            self.pending = []
        self.log.process()
        self.processed = True

    def _real_groups(self) -> set[frozenset[str]]:
        return {frozenset(g) for g in self._real_groups_by_profile().values()}

    @invariant()
    @precondition(lambda self: self.processed)
    def same_grouping_as_the_model(self) -> None:
        expected = {frozenset(m) for m in self.model.members.values() if m}
        assert self._real_groups() == expected

    @invariant()
    @precondition(lambda self: self.processed)
    def no_profile_holds_two_user_ids_unless_aliased(self) -> None:
        with self.engine.connect() as conn:
            live = conn.execute(
                sa.select(profiles_table.c.user_ids).where(profiles_table.c.merged_into.is_(None))
            ).scalars()
            assert all(len(ids) <= 1 for ids in live) or self._aliased_users()

    @invariant()
    @precondition(lambda self: self.processed)
    def each_event_is_in_the_timeline_of_the_profile_it_went_to_alone(self) -> None:
        """Every event is in one live profile's timeline: the one holding the identifiers
        of the model's group it went to (e-mail on another's device included)."""
        self._check_timelines()

    def _check_timelines(self) -> None:
        holder = {frozenset(keys): pid for pid, keys in self._real_groups_by_profile().items()}
        shown: dict[str, list[str]] = {}
        for pid in self.log.live_profiles():
            _, found = read.timeline(self.engine, pid, before_id=None, limit=10_000)
            for event in found:
                shown.setdefault(event.message_id, []).append(pid)
        expected = {
            message_id: [holder[frozenset(self.model.members[self.model.final(group)])]]
            for message_id, group in self.placed.items()
        }
        assert shown == expected

    def _real_groups_by_profile(self) -> dict[str, set[str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(identities.c.key, identities.c.profile_id)).all()
        groups: dict[str, set[str]] = {}
        for key, pid in rows:
            groups.setdefault(pid, set()).add(key)
        return groups

    def _aliased_users(self) -> bool:
        return any(len(self.model.users(g)) > 1 for g in self.model.members)

    def teardown(self) -> None:
        try:
            if self.processed and self.model.members:
                before = self._real_groups()
                profiles.rebuild(self.engine, self.log.settings)
                assert self._real_groups() == before
                self._check_timelines()
        finally:
            self.engine.dispose()
            shutil.rmtree(self.dir, ignore_errors=True)
            if self.schema is not None and POSTGRES_URL:
                admin = sa.create_engine(_postgres_schema_url(POSTGRES_URL, "public"))
                with admin.begin() as conn:
                    conn.execute(sa.text(f'DROP SCHEMA "{self.schema}" CASCADE'))
                admin.dispose()


class PostgresIdentityMachine(IdentityMachine):
    backend = "postgres"


class KioskIdentityMachine(IdentityMachine):
    """At most two anonymous ids a profile: the limit refuses ids and merges often."""

    max_anonymous_ids = 2


_SQLITE_RUNS = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_identity_graph_matches_the_model_sqlite = IdentityMachine.TestCase
test_identity_graph_matches_the_model_sqlite.settings = _SQLITE_RUNS
test_identity_graph_with_a_low_anonymous_id_limit_matches_the_model = KioskIdentityMachine.TestCase
test_identity_graph_with_a_low_anonymous_id_limit_matches_the_model.settings = _SQLITE_RUNS


@pytest.mark.postgres
class TestIdentityGraphMatchesTheModelPostgres(PostgresIdentityMachine.TestCase):  # type: ignore[misc,name-defined]
    settings = settings(
        max_examples=12,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )

    def setUp(self) -> None:
        if not POSTGRES_URL:
            if IN_CI:
                pytest.fail("CI=true but CLOSEDLOOP_TEST_POSTGRES_URL is not set")
            pytest.skip("set CLOSEDLOOP_TEST_POSTGRES_URL to run PostgreSQL cases")
