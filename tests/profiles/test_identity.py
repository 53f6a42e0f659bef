"""Identity rules, each on both backends: who is who after identify, alias, e-mail, phone."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from closedloop.config import IdentitySettings
from closedloop.identity import customer_key
from closedloop.identity._tables import identity_conflicts, identity_merges
from closedloop.profiles.read import timeline
from tests.profiles.conftest import Log, identify, track


def _alias(previous: str, user_id: str) -> dict[str, Any]:
    return {"type": "alias", "previousId": previous, "userId": user_id}


def test_identify_merges_anonymous_history(log: Log) -> None:
    log.send(track("Article Rated", anonymous_id="anon-1", properties={"rating": 5}))
    log.send(track("Page Viewed", anonymous_id="anon-1"))
    log.send(identify("user-1", "anon-1", email="anna@example.com"))
    log.process()
    pid = log.profile_of("user_id", "user-1")
    assert pid is not None
    assert log.profile_of("anonymous_id", "anon-1") == pid
    assert log.profile_of("email", "anna@example.com") == pid
    assert log.live_profiles() == [pid]


def test_identify_on_second_device_merges_its_anonymous_profile(log: Log) -> None:
    log.send(identify("user-1", "phone-anon"))
    log.send(track("Product Viewed", anonymous_id="laptop-anon"))
    log.process()
    laptop = log.profile_of("anonymous_id", "laptop-anon")
    assert laptop != log.profile_of("user_id", "user-1")
    log.send(identify("user-1", "laptop-anon"))
    log.process()
    pid = log.profile_of("user_id", "user-1")
    assert log.profile_of("anonymous_id", "laptop-anon") == pid
    assert log.live_profiles() == [pid]
    with log.engine.connect() as conn:
        merges = conn.execute(sa.select(identity_merges)).all()
    assert [(m.survivor_id, m.merged_id, m.via) for m in merges] == [(pid, laptop, "anonymous_id")]


def test_alias_joins_previous_id_into_user_id(log: Log) -> None:
    log.send(track("Signed Up", anonymous_id="anon-9"))
    log.send(track("Order Completed", user_id="user-9"))
    log.process()
    assert log.profile_of("anonymous_id", "anon-9") != log.profile_of("user_id", "user-9")
    log.send(_alias("anon-9", "user-9"))
    log.process()
    assert log.profile_of("anonymous_id", "anon-9") == log.profile_of("user_id", "user-9")
    assert len(log.live_profiles()) == 1


def test_alias_joins_two_user_ids(log: Log) -> None:
    log.send(identify("old-id"), identify("new-id"))
    log.send(_alias("old-id", "new-id"))
    log.process()
    assert log.profile_of("user_id", "old-id") == log.profile_of("user_id", "new-id")


def test_alias_of_unknown_previous_id_attaches_it(log: Log) -> None:
    log.send(_alias("anon-new", "user-new"))
    log.process()
    assert log.profile_of("anonymous_id", "anon-new") == log.profile_of("user_id", "user-new")


def test_same_email_joins_profiles(log: Log) -> None:
    log.send(identify(None, "newsletter-anon", email="Erika@Example.com"))
    log.send(identify("shop-7", email="  erika@example.COM "))
    log.process()
    assert log.profile_of("anonymous_id", "newsletter-anon") == log.profile_of("user_id", "shop-7")
    assert len(log.live_profiles()) == 1


def test_same_email_does_not_join_when_turned_off(log: Log) -> None:
    log.settings = log.settings.model_copy(
        update={"identity": IdentitySettings(merge_on_email=False)}
    )
    log.send(identify(None, "newsletter-anon", email="erika@example.com"))
    log.send(identify("shop-7", email="erika@example.com"))
    log.process()
    assert log.profile_of("anonymous_id", "newsletter-anon") != log.profile_of("user_id", "shop-7")
    assert len(log.live_profiles()) == 2


def test_identifiers_in_the_context_traits_of_any_event_join_profiles(log: Log) -> None:
    """Segment's SDKs may send the known traits in `context.traits` of a track or page
    call: its e-mail and phone identify as an identify's do. Events that name no traits
    are parsed only when applied (the processor's first pass looks for the key); one
    that mentions "traits" elsewhere, in a property or an escaped key, is read in full."""
    log.send(identify("shop-7", email="erika@example.com"))
    log.send(
        track(
            "Newsletter Subscribed",
            anonymous_id="mail-anon",
            context={"traits": {"email": " Erika@Example.COM "}},
        ),
        {
            "type": "page",
            "anonymousId": "call-anon",
            "name": "Hotline",
            "context": {"traits": {"phone": "+49 351 1234567"}},
        },
        track(
            "Article Rated",
            anonymous_id="other-anon",
            properties={"title": '{"traits": {"email": "erika@example.com"}}', "rating": 5},
        ),
        track("Article Shared", anonymous_id="escaped-anon", context={"tr\\u0061its": {}}),
    )
    log.send(identify("shop-8", phone="0351 1234567"))
    assert log.process() == 6
    assert log.profile_of("anonymous_id", "mail-anon") == log.profile_of("user_id", "shop-7")
    assert log.profile_of("anonymous_id", "call-anon") == log.profile_of("user_id", "shop-8")
    assert log.profile_of("phone", "+493511234567") == log.profile_of("user_id", "shop-8")
    # A property holding the word is no identifier; nor is a key that only looks like one.
    assert log.profile_of("anonymous_id", "other-anon") not in (
        None,
        log.profile_of("user_id", "shop-7"),
    )
    assert log.profile_of("anonymous_id", "escaped-anon") is not None
    assert len(log.live_profiles()) == 4


def test_two_user_ids_are_never_merged_and_the_conflict_is_recorded(log: Log) -> None:
    log.send(identify("mother", "family-tablet", email="mother@example.com"))
    log.send(identify("daughter", "family-tablet"))
    log.send(identify("daughter", email="mother@example.com"))
    log.process()
    mother = log.profile_of("user_id", "mother")
    daughter = log.profile_of("user_id", "daughter")
    assert mother != daughter
    assert log.profile_of("anonymous_id", "family-tablet") == mother
    with log.engine.connect() as conn:
        conflicts = conn.execute(
            sa.select(identity_conflicts).order_by(identity_conflicts.c.id)
        ).all()
    assert {(c.profile_id, c.other_profile_id, c.identity_key, c.reason) for c in conflicts} == {
        (daughter, mother, "a:family-tablet", "different_user_ids"),
        (daughter, mother, "e:mother@example.com", "different_user_ids"),
    }


def test_repeated_conflict_is_counted_once(log: Log) -> None:
    log.send(identify("a", "kiosk"), identify("b", "kiosk"))
    log.process()
    log.send(identify("b", "kiosk"))
    log.process()
    with log.engine.connect() as conn:
        rows = conn.execute(sa.select(identity_conflicts)).all()
    assert [r.occurrences for r in rows] == [2]


def test_anonymous_id_limit_stops_a_shared_kiosk(log: Log) -> None:
    log.settings = log.settings.model_copy(
        update={"identity": IdentitySettings(max_anonymous_ids=3)}
    )
    for n in range(5):
        log.send(identify(None, f"kiosk-session-{n}", email="kiosk@example.com"))
    log.process()
    owner = log.profile_of("email", "kiosk@example.com")
    held = [log.profile_of("anonymous_id", f"kiosk-session-{n}") for n in range(5)]
    assert held.count(owner) == 3
    with log.engine.connect() as conn:
        reasons = set(conn.execute(sa.select(identity_conflicts.c.reason)).scalars())
    assert reasons == {"anonymous_id_limit"}
    # Her timeline has all five: three under her anonymous ids, two refused ones.
    assert owner is not None and len(_timeline(log, owner)) == 5


def test_phone_joins_a_call_to_the_customer(log: Log) -> None:
    log.send(identify("shop-1", phone="0351 1234567"))
    log.send(
        identify(None, "call-123", phone="+49 351 1234567"),
        track("Call Center Contact", anonymous_id="call-123", properties={"reason": "complaint"}),
        source="callcenter",
        kind="callcenter",
    )
    log.process()
    assert log.profile_of("anonymous_id", "call-123") == log.profile_of("user_id", "shop-1")
    assert log.profile_of("phone", "+493511234567") == log.profile_of("user_id", "shop-1")


def test_customer_key_is_the_keyed_hash_of_the_email(
    log: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    log.send(identify("u-1", email=" Anna@Example.com"))
    log.process()
    secret = log.settings.secret_key
    assert secret is not None
    expected = customer_key("anna@example.com", secret=secret.get_secret_value().encode())
    found = client.get("/v1/profiles", params={"email": "ANNA@example.com"}, headers=admin_headers)
    assert found.status_code == 200
    (profile,) = found.json()["items"]
    assert profile["customer_key"] == expected
    assert "anna" not in profile["customer_key"]
    by_key = client.get("/v1/profiles", params={"customer_key": expected}, headers=admin_headers)
    assert by_key.json()["items"][0]["id"] == profile["id"]


@pytest.mark.parametrize(
    "spelling", ["0351 1234567", "+49 351 1234567", "+49 (351) 123-4567", "00493511234567"]
)
def test_profile_lookup_by_phone_in_any_format(
    log: Log, client: TestClient, admin_headers: dict[str, str], spelling: str
) -> None:
    log.send(identify("caller", phone="0351/1234567"))
    log.process()
    found = client.get("/v1/profiles", params={"phone": spelling}, headers=admin_headers)
    assert found.status_code == 200, found.text
    (profile,) = found.json()["items"]
    assert {(i["kind"], i["value"]) for i in profile["identities"]} == {
        ("user_id", "caller"),
        ("phone", "+493511234567"),
    }
    assert found.json()["items"][0]["masterdata"]["phone"] == "+493511234567"


def _timeline(log: Log, profile_id: str) -> list[int]:
    return [e.id for e in timeline(log.engine, profile_id, before_id=None, limit=50)[1]]


def test_an_event_joined_by_email_on_anothers_device_is_in_her_timeline(log: Log) -> None:
    """A newsletter form filled in on the family tablet, whose anonymous id is Anna's: the
    processor applies it to Berta by her e-mail (the two user ids are never merged). Her
    timeline shows it and Anna's does not; a later merge takes it along."""
    log.send(identify("anna", "family-tablet", email="anna@example.com"))
    log.send(identify("berta", "berta-phone", email="berta@example.com"))
    log.send(identify(None, "family-tablet", email="Berta@Example.com", newsletter=True))
    log.process()
    anna, berta = log.profile_of("user_id", "anna"), log.profile_of("user_id", "berta")
    assert anna and berta and anna != berta
    form = max(_timeline(log, berta))
    assert form not in _timeline(log, anna)
    assert len(_timeline(log, anna)) == 1 and len(_timeline(log, berta)) == 2
    # Berta's account is joined into a new one: the form goes with her.
    log.send(_alias("berta", "berta-new"))
    log.process()
    survivor = log.profile_of("user_id", "berta-new")
    assert survivor is not None and log.profile_of("user_id", "berta") == survivor
    assert form in _timeline(log, survivor)
    assert form not in _timeline(log, anna)
