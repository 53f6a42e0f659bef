"""Traits (last write wins by event time), computed traits, consent and master data."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from closedloop import profiles
from tests.profiles.conftest import Log, identify, track


def _profile(client: TestClient, headers: dict[str, str], **lookup: str) -> dict[str, Any]:
    answer = client.get("/v1/profiles", params=lookup, headers=headers)
    assert answer.status_code == 200, answer.text
    (profile,) = answer.json()["items"]
    return profile  # type: ignore[no-any-return]


def test_late_event_keeps_the_newer_trait(
    log: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    newer = identify("u-1", city="Dresden")
    newer["timestamp"] = "2026-11-20T10:00:00Z"
    older = identify("u-1", city="Leipzig", lastName="Muster")
    older["timestamp"] = "2026-11-01T10:00:00Z"
    log.send(newer)
    log.process()
    log.send(older)  # arrives later, says something older
    log.process()
    profile = _profile(client, admin_headers, user_id="u-1")
    assert profile["traits"]["city"] == "Dresden"
    assert profile["traits"]["lastName"] == "Muster"  # nothing newer: taken
    assert profile["trait_sources"]["city"]["at"].startswith("2026-11-20T10:00:00")
    assert profile["trait_sources"]["city"]["source"] == "web"


def test_traits_in_any_script_come_back_as_sent(
    log: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    """Payloads are read as the stored UTF-8 bytes and parsed from them (SQLite): text in any
    script, quotes, backslashes and emoji come back unchanged, in traits and interests."""
    sent = {
        "lastName": "Müller-Lüdenscheidt",
        "firstName": "Zoë 🎉",
        "company": {"name": 'O\'Brien "Ωmega" \\ Straße'},
        "note": "日本語 ☃\nzweite Zeile",
    }
    log.send(identify("u-utf8", **sent))
    log.send(track("Product Viewed", user_id="u-utf8", properties={"category": "Größe ☃"}))
    assert log.process() == 2
    profile = _profile(client, admin_headers, user_id="u-utf8")
    assert profile["traits"]["lastName"] == sent["lastName"]
    assert profile["traits"]["firstName"] == sent["firstName"]
    assert profile["traits"]["company"] == sent["company"]
    assert profile["traits"]["note"] == sent["note"]
    assert profile["computed"]["interests"] == [{"category": "Größe ☃", "count": 1}]


def test_address_fields_are_kept_per_field(
    log: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    log.send(identify("u-2", address={"postalCode": "01067", "city": "Dresden"}))
    second = identify("u-2", address={"street": "Hauptstr. 1"})
    second["timestamp"] = "2026-11-22T11:00:00Z"
    log.send(second)
    log.process()
    address = _profile(client, admin_headers, user_id="u-2")["traits"]["address"]
    assert address == {"city": "Dresden", "postalCode": "01067", "street": "Hauptstr. 1"}


def test_name_fills_first_and_last_name_only_when_absent(
    log: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    log.send(identify("u-3", name="Erika Maria Musterfrau"))
    log.send(identify("u-4", name="Erika Musterfrau", firstName="Eri", lastName="Muster"))
    log.process()
    one = _profile(client, admin_headers, user_id="u-3")["masterdata"]
    assert (one["first_name"], one["last_name"]) == ("Erika Maria", "Musterfrau")
    two = _profile(client, admin_headers, user_id="u-4")["masterdata"]
    assert (two["first_name"], two["last_name"]) == ("Eri", "Muster")


@pytest.mark.parametrize(
    ("traits", "expected", "problems"),
    [
        (
            {
                "gender": "w",
                "lastName": "Musterfrau",
                "address": {"postalCode": 1067, "country": "Deutschland"},
            },
            {
                "gender": "female",
                "postal_code": "01067",
                "country": "DE",
                "salutation_de": "Sehr geehrte Frau Musterfrau",
                "salutation_en": "Dear Ms Musterfrau",
            },
            [],
        ),
        (
            {"gender": "Herr", "lastName": "Mustermann", "salutation": "Frau"},
            {"gender": "male", "salutation_de": "Sehr geehrter Herr Mustermann"},
            [("salutation", "salutation contradicts gender `male`")],
        ),
        (
            {"gender": "divers", "firstName": "Kim", "lastName": "Muster"},
            {
                "gender": "diverse",
                "salutation_de": "Guten Tag Kim Muster",
                "salutation_en": "Dear Kim Muster",
            },
            [],
        ),
        (
            {
                "email": "not-an-address",
                "birthday": "03/07/1985",
                "address": {"postalCode": "1234567", "country": "DE"},
            },
            {"email": None, "birthday": None, "postal_code": None},
            [("email", None), ("address.postalCode", None), ("birthday", None)],
        ),
        (
            {
                "birthday": "07.03.1985",
                "phone": "0351 1234567",
                "address": {"postalCode": "8010", "country": "AT"},
            },
            {
                "birthday": "1985-03-07",
                "phone": "+493511234567",
                "postal_code": "8010",
                "country": "AT",
            },
            [],
        ),
    ],
)
def test_master_data_is_normalised_with_problems_listed(
    log: Log,
    client: TestClient,
    admin_headers: dict[str, str],
    traits: dict[str, Any],
    expected: dict[str, Any],
    problems: list[tuple[str, str | None]],
) -> None:
    log.send(identify("md", **traits))
    log.process()
    profile = _profile(client, admin_headers, user_id="md")
    for name, value in expected.items():
        assert profile["masterdata"][name] == value, name
    found = [(q["field"], q["problem"]) for q in profile["quality"]]
    assert [f for f, _ in found] == [f for f, _ in problems]
    for (field, problem), (_f, got) in zip(problems, found, strict=True):
        if problem is not None:
            assert got == problem, field


def test_computed_traits_count_orders_channels_and_interests(
    log: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    shoes = {"category": "Laufschuhe", "product_id": "p1"}
    log.send(
        track("Product Viewed", anonymous_id="a-7", properties=shoes),
        track("Product Viewed", anonymous_id="a-7", properties=shoes),
        track("Product Viewed", anonymous_id="a-7", properties={"category": "Socken"}),
    )
    log.send(identify("u-7", "a-7"))
    log.send(
        track(
            "Order Completed",
            user_id="u-7",
            properties={"revenue": 89.9, "products": [{"category": "Laufschuhe"}]},
        ),
        source="pos",
        kind="pos",
    )
    log.process()
    computed = _profile(client, admin_headers, user_id="u-7")["computed"]
    assert computed["orders"] == 1
    assert computed["revenue"] == 89.9
    assert computed["channels"] == ["pos", "web"]
    assert computed["events"] == 5
    assert computed["events_by_type"] == {"identify": 1, "track": 4}
    assert computed["interests"][0] == {"category": "Laufschuhe", "count": 3}
    assert computed["interests"][1] == {"category": "Socken", "count": 1}


def test_a_channel_that_is_no_name_leaves_the_sources_and_processing_goes_on(
    log: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    """`context.channel` names the channel where a source relays several; a list there
    (unhashable) stopped every batch holding the event, a poison event for the processor."""
    hostile: list[Any] = [["app"], {"app": 1}, 7, None, "fax", ""]
    for n, channel in enumerate(hostile):
        message = track("Article Rated", user_id="u-c")
        message["context"] = {"channel": channel}
        message["messageId"] = f"m-{n}"
        log.send(message)
    relayed = track("Article Rated", user_id="u-c")
    relayed["context"] = {"channel": "app"}
    log.send(relayed)
    assert log.process() == len(hostile) + 1
    computed = _profile(client, admin_headers, user_id="u-c")["computed"]
    assert computed["channels"] == ["app", "web"]
    assert computed["events"] == len(hostile) + 1
    assert profiles.lag(log.engine).events == 0


def test_consent_from_traits_segment_format_and_api_with_history(
    log: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    log.send(identify("u-8", consent={"surveys": True, "marketing": "no", "unknown": True}))
    later = track("Cookie Banner", user_id="u-8")
    later["timestamp"] = "2026-11-22T11:00:00Z"
    later["context"] = {"consent": {"categoryPreferences": {"analytics": True, "Marketing": True}}}
    log.send(later)
    log.process()
    profile = _profile(client, admin_headers, user_id="u-8")
    consent = profile["consent"]
    assert consent["surveys"]["granted"] is True
    assert consent["marketing"]["granted"] is True  # the later statement wins
    assert consent["analytics"]["source"] == "web:consent"
    assert consent["crm_sync"] is None

    answer = client.put(
        f"/v1/profiles/{profile['id']}/consent", json={"surveys": False}, headers=admin_headers
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["consent"]["surveys"]["granted"] is False
    assert body["consent"]["surveys"]["source"] == "closedloop-api:consent"
    history = [(h["purpose"], h["granted"]) for h in body["history"]]
    assert history == [
        ("marketing", False),
        ("surveys", True),
        ("analytics", True),
        ("marketing", True),
        ("surveys", False),
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "consent"),
        ({"newsletter": True}, "newsletter"),
        ({"surveys": "yes"}, "surveys"),
        ({"surveys": None}, "surveys"),
    ],
)
def test_consent_api_names_the_bad_field(
    log: Log, client: TestClient, admin_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    log.send(identify("u-9"))
    log.process()
    pid = log.profile_of("user_id", "u-9")
    answer = client.put(f"/v1/profiles/{pid}/consent", json=body, headers=admin_headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field
