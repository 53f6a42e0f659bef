"""The profile API: look-ups, paging, timeline, merged ids, and bad input on every parameter."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.profiles.conftest import Log, identify, track


@pytest.fixture
def shop(log: Log) -> Log:
    log.send(track("Article Rated", anonymous_id="anon-1", properties={"rating": 5}))
    log.send(identify("user-1", "anon-1", email="anna@example.com", phone="0351 1234567"))
    log.send(track("Product Viewed", anonymous_id="laptop"))
    log.send(identify("user-1", "laptop"))
    log.send(track("Order Completed", user_id="user-1", properties={"revenue": 10}))
    for n in range(5):
        log.send(identify(f"other-{n}"))
    log.process()
    return log


@pytest.fixture
def log(engine: Any, db_url: str) -> Log:
    from tests.conftest import make_settings

    return Log(engine, make_settings(db_url))


def test_timeline_spans_every_id_the_customer_had(
    shop: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    pid = shop.profile_of("user_id", "user-1")
    answer = client.get(f"/v1/profiles/{pid}/events", headers=admin_headers)
    assert answer.status_code == 200
    names = [(e["type"], e["event"], e["anonymous_id"]) for e in answer.json()["items"]]
    assert names == [
        ("track", "Order Completed", None),
        ("identify", None, "laptop"),
        ("track", "Product Viewed", "laptop"),
        ("identify", None, "anon-1"),
        ("track", "Article Rated", "anon-1"),
    ]
    page = client.get(f"/v1/profiles/{pid}/events", params={"limit": 2}, headers=admin_headers)
    assert len(page.json()["items"]) == 2
    rest = client.get(
        f"/v1/profiles/{pid}/events",
        params={"cursor": page.json()["next_cursor"]},
        headers=admin_headers,
    )
    assert len(rest.json()["items"]) == 3


def test_merged_profile_id_answers_with_the_survivor(
    shop: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    survivor = client.get("/v1/profiles", params={"user_id": "user-1"}, headers=admin_headers)
    (profile,) = survivor.json()["items"]
    (merged,) = profile["merged_from"]
    assert merged["via"] == "anonymous_id"
    answer = client.get(f"/v1/profiles/{merged['id']}", headers=admin_headers)
    assert answer.status_code == 200
    assert answer.json()["id"] == profile["id"]
    for key in (
        "id",
        "customer_key",
        "identities",
        "traits",
        "computed",
        "consent",
        "quality",
        "merged_from",
        "created_at",
        "updated_at",
        "masterdata",
        "conflicts",
    ):
        assert key in profile


def test_profiles_are_listed_in_pages(
    shop: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/profiles", params=params, headers=admin_headers).json()
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(shop.live_profiles()) and len(seen) == 6


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"email": "not-an-address"}, "email"),
        ({"email": "x" * 400 + "@example.com"}, "email"),
        ({"phone": "call me"}, "phone"),
        ({"phone": "12"}, "phone"),
        ({"customer_key": "v1.zz"}, "customer_key"),
        ({"user_id": "u" * 400}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "\u0000x"}, "user_id"),
        ({"anonymous_id": "a\u0000"}, "anonymous_id"),
        ({"email": "anna@example.com", "user_id": "user-1"}, "email"),
        ({"cursor": "'; DROP TABLE profiles; --"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": 100000}, "limit"),
        ({"limit": "many"}, "limit"),
    ],
)
def test_bad_lookup_names_the_field(
    shop: Log,
    client: TestClient,
    admin_headers: dict[str, str],
    params: dict[str, Any],
    field: str,
) -> None:
    answer = client.get("/v1/profiles", params=params, headers=admin_headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field


@pytest.mark.parametrize("value", ["' OR 1=1 --", "user-1' --", "%", "*", "user-1 ", "USER-1"])
def test_hostile_ids_find_nobody(
    shop: Log, client: TestClient, admin_headers: dict[str, str], value: str
) -> None:
    answer = client.get("/v1/profiles", params={"user_id": value}, headers=admin_headers)
    assert answer.status_code == 200
    assert answer.json()["items"] == []


def test_unknown_profile_is_404(
    shop: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    for path in (
        "/v1/profiles/p_nobody",
        "/v1/profiles/" + "x" * 500,
        "/v1/profiles/p_nobody/events",
    ):
        answer = client.get(path, headers=admin_headers)
        assert answer.status_code == 404, path
        assert "no profile" in answer.json()["error"]["message"]
    answer = client.put(
        "/v1/profiles/p_nobody/consent", json={"surveys": True}, headers=admin_headers
    )
    assert answer.status_code == 404


def test_profile_routes_need_the_admin_token(shop: Log, client: TestClient) -> None:
    pid = shop.profile_of("user_id", "user-1")
    for method, path in (
        ("GET", "/v1/profiles"),
        ("GET", f"/v1/profiles/{pid}"),
        ("GET", f"/v1/profiles/{pid}/events"),
        ("GET", f"/v1/profiles/{pid}/consent"),
        ("PUT", f"/v1/profiles/{pid}/consent"),
    ):
        answer = client.request(
            method, path, json={"surveys": True}, headers={"Authorization": "Bearer wrong"}
        )
        assert answer.status_code == 401, path


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'"surveys"', b"", b'{"surveys": true' + b" " * 10],
)
def test_malformed_consent_body_is_400(
    shop: Log, client: TestClient, admin_headers: dict[str, str], body: bytes
) -> None:
    pid = shop.profile_of("user_id", "user-1")
    answer = client.put(
        f"/v1/profiles/{pid}/consent",
        content=body,
        headers={**admin_headers, "Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["message"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(
        ["email", "phone", "user_id", "anonymous_id", "customer_key", "cursor", "quality"]
    ),
    value=st.text(max_size=400),
)
def test_any_lookup_value_answers_200_or_400(
    shop: Log, client: TestClient, admin_headers: dict[str, str], kind: str, value: str
) -> None:
    answer = client.get("/v1/profiles", params={kind: value}, headers=admin_headers)
    assert answer.status_code in (200, 400), answer.text
    if answer.status_code == 400:
        assert answer.json()["error"]["field"] == kind


def test_conflicts_stay_visible_after_the_profile_is_merged(
    log: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    """A refused join is recorded with the profiles of its day; when one of them is merged
    later (an alias into another account), the survivor answers for it, the conflict
    included, and both sides name the profiles that hold them now."""
    log.send(identify("mother", "family-tablet"), identify("daughter", "family-tablet"))
    log.process()
    daughter = log.profile_of("user_id", "daughter")
    log.send(
        identify("daughter-new"),
        {"type": "alias", "previousId": "daughter", "userId": "daughter-new"},
    )
    log.process()
    survivor = log.profile_of("user_id", "daughter-new")
    mother = log.profile_of("user_id", "mother")
    assert log.profile_of("user_id", "daughter") == survivor != daughter
    for params in ({"user_id": "daughter"}, {"user_id": "mother"}):
        (profile,) = client.get("/v1/profiles", params=params, headers=admin_headers).json()[
            "items"
        ]
        assert [
            (c["profile_id"], c["other_profile_id"], c["identity"], c["reason"])
            for c in profile["conflicts"]
        ] == [
            (
                survivor,
                mother,
                {"kind": "anonymous_id", "value": "family-tablet"},
                "different_user_ids",
            )
        ]
    answer = client.get(f"/v1/profiles/{daughter}", headers=admin_headers).json()
    assert answer["id"] == survivor
    assert len(answer["conflicts"]) == 1


def test_a_conflict_settled_by_an_alias_is_no_longer_listed(
    log: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    """Two accounts on one tablet conflict; an alias then states they are one customer."""
    log.send(identify("old-account", "tablet"), identify("new-account", "tablet"))
    log.process()
    (before,) = client.get(
        "/v1/profiles", params={"user_id": "old-account"}, headers=admin_headers
    ).json()["items"]
    assert [c["reason"] for c in before["conflicts"]] == ["different_user_ids"]
    log.send({"type": "alias", "previousId": "old-account", "userId": "new-account"})
    log.process()
    (after,) = client.get(
        "/v1/profiles", params={"user_id": "old-account"}, headers=admin_headers
    ).json()["items"]
    assert after["id"] == log.profile_of("user_id", "new-account")
    assert [m["via"] for m in after["merged_from"]] == ["alias"]
    assert after["conflicts"] == []


def test_refused_joins_are_listed_newest_first_in_pages(
    log: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    log.settings = log.settings.model_copy(
        update={"identity": log.settings.identity.model_copy(update={"max_anonymous_ids": 2})}
    )
    log.send(identify("mother", "family-tablet"), identify("daughter", "family-tablet"))
    log.send(*(identify(None, f"kiosk-{n}", email="kiosk@example.com") for n in range(4)))
    log.send({"type": "alias", "previousId": "daughter", "userId": "mother"})
    log.process()

    def page(**params: Any) -> dict[str, Any]:
        answer = client.get("/v1/identity/conflicts", params=params, headers=admin_headers)
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    everything = page()["items"]
    assert [(c["reason"], c["settled"]) for c in everything] == [
        ("anonymous_id_limit", False),
        ("anonymous_id_limit", False),
        ("different_user_ids", True),  # the alias joined mother and daughter later
    ]
    kiosk = log.profile_of("email", "kiosk@example.com")
    assert {c["profile_id"] for c in everything[:2]} == {kiosk}
    assert [c["other_profile_id"] for c in everything[:2]] == [None, None]
    first = page(limit=2)
    assert first["items"] == everything[:2]
    rest = page(limit=2, cursor=first["next_cursor"])
    assert rest["items"] == everything[2:] and rest["next_cursor"] is None
    only = page(reason="different_user_ids")["items"]
    assert only == everything[2:]


@pytest.fixture
def conflicted(log: Log) -> Log:
    """Refusals of each kind, met a different number of times, one settled since:
    mother and daughter share a tablet (an alias joins them later), dad's PC meets his son
    three times and then again once, a kiosk (2 anonymous ids a profile) takes a third."""
    log.settings = log.settings.model_copy(
        update={"identity": log.settings.identity.model_copy(update={"max_anonymous_ids": 2})}
    )
    log.send(identify("mother", "family-tablet"), identify("daughter", "family-tablet"))
    log.send(identify("dad", "shared-pc"), *(identify("son", "shared-pc") for _ in range(3)))
    log.send(*(identify(None, f"kiosk-{n}", email="kiosk@example.com") for n in range(3)))
    log.send({"type": "alias", "previousId": "daughter", "userId": "mother"})
    log.process()
    log.send(identify("son", "shared-pc"))  # the PC's refusal is met again, last of all
    log.process()
    return log


def _conflicts(client: TestClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    answer = client.get("/v1/identity/conflicts", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


@pytest.mark.parametrize("sort", ["newest", "occurrences", "last_seen"])
@pytest.mark.parametrize("settled", [None, True, False])
def test_refused_joins_sorted_filtered_and_paged(
    conflicted: Log,
    client: TestClient,
    admin_headers: dict[str, str],
    sort: str,
    settled: bool | None,
) -> None:
    """Each order and filter answers what sorting and filtering the whole list in Python
    gives, and pages of one walk it in the same order."""
    everything = _conflicts(client, admin_headers)["items"]
    assert len(everything) == 3
    key = {"newest": "id", "occurrences": "occurrences", "last_seen": "last_event_id"}[sort]
    want = sorted(
        (c for c in everything if settled is None or c["settled"] == settled),
        key=lambda c: (c[key], c["id"]),
        reverse=True,
    )
    params: dict[str, Any] = {"sort": sort}
    if settled is not None:
        params["settled"] = str(settled).lower()
    assert _conflicts(client, admin_headers, **params)["items"] == want
    walked, cursor = [], None
    for _ in range(5):
        page = _conflicts(
            client, admin_headers, **params, limit=1, **({"cursor": cursor} if cursor else {})
        )
        walked += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == want


def test_refused_joins_by_occurrences_and_open_only(
    conflicted: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    shared_pc = {"kind": "anonymous_id", "value": "shared-pc"}
    by_count = _conflicts(client, admin_headers, sort="occurrences")["items"]
    assert (by_count[0]["identity"], by_count[0]["occurrences"]) == (shared_pc, 4)
    recent = _conflicts(client, admin_headers, sort="last_seen")["items"]
    assert recent[0]["identity"] == shared_pc
    open_ones = _conflicts(client, admin_headers, settled="false")["items"]
    assert {c["reason"] for c in open_ones} == {"different_user_ids", "anonymous_id_limit"}
    assert not any(c["settled"] for c in open_ones)
    (settled,) = _conflicts(client, admin_headers, settled="true")["items"]
    assert settled["identity"] == {"kind": "anonymous_id", "value": "family-tablet"}
    assert settled["profile_id"] == settled["other_profile_id"]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/identity/conflicts", {"reason": "kiosk"}, "reason"),
        ("/v1/identity/conflicts", {"reason": "' OR 1=1 --"}, "reason"),
        ("/v1/identity/conflicts", {"cursor": "\u00b2"}, "cursor"),
        ("/v1/identity/conflicts", {"cursor": str(2**63)}, "cursor"),
        ("/v1/identity/conflicts", {"limit": 0}, "limit"),
        ("/v1/identity/conflicts", {"limit": 501}, "limit"),
        ("/v1/identity/conflicts", {"sort": "loudest"}, "sort"),
        ("/v1/identity/conflicts", {"sort": "id; DROP TABLE profiles"}, "sort"),
        ("/v1/identity/conflicts", {"sort": "loudest", "cursor": "3.1"}, "sort"),
        ("/v1/identity/conflicts", {"sort": "occurrences", "cursor": "5"}, "cursor"),
        ("/v1/identity/conflicts", {"cursor": "3.1"}, "cursor"),
        ("/v1/identity/conflicts", {"sort": "last_seen", "cursor": "1.2.3"}, "cursor"),
        ("/v1/identity/conflicts", {"sort": "occurrences", "cursor": "\u00b2.1"}, "cursor"),
        ("/v1/identity/conflicts", {"sort": "occurrences", "cursor": f"1.{2**63}"}, "cursor"),
        ("/v1/identity/conflicts", {"sort": "occurrences", "cursor": "-1.5"}, "cursor"),
        ("/v1/identity/conflicts", {"sort": "occurrences", "cursor": "."}, "cursor"),
        ("/v1/identity/conflicts", {"settled": "maybe"}, "settled"),
        ("/v1/profiles", {"quality": ""}, "quality"),
        ("/v1/profiles", {"quality": "x" * 201}, "quality"),
        ("/v1/profiles", {"quality": "gen\x00der"}, "quality"),
        ("/v1/profiles", {"quality": "gender", "email": "anna@example.com"}, "quality"),
        ("/v1/profiles", {"quality": "gender", "cursor": "../../etc"}, "cursor"),
        ("/v1/profiles/quality", {"examples": "-1"}, "examples"),
        ("/v1/profiles/quality", {"examples": "21"}, "examples"),
        ("/v1/profiles/quality", {"examples": "many"}, "examples"),
        ("/v1/profiles/quality", {"examples": "\u00b2"}, "examples"),
    ],
)
def test_bad_listing_parameters_name_the_field(
    client: TestClient,
    admin_headers: dict[str, str],
    path: str,
    params: dict[str, Any],
    field: str,
) -> None:
    answer = client.get(path, params=params, headers=admin_headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field
    assert client.get(path).status_code == 401


@pytest.fixture
def messy(log: Log) -> Log:
    """Master data of every kind of quality: clean, a salutation against the gender, a
    postal code too long and a gender no spelling knows, a postal code too short, and a
    customer whose bad postal code was fixed by a later identify."""
    log.send(
        identify("anna", gender="w", salutation="Herr", lastName="Muster"),
        identify("bert", gender="robot", address={"postalCode": "1234567", "country": "DE"}),
        identify("carl", address={"postalCode": "123", "country": "DE"}),
        identify("dora", gender="f", address={"postalCode": "1067", "country": "DE"}),
        identify("emil", address={"postalCode": "99", "country": "DE"}),
    )
    log.process()
    fixed = identify("emil", address={"postalCode": "99817", "country": "DE"})
    fixed["timestamp"] = "2026-11-23T10:00:00Z"
    log.send(fixed)
    log.process()
    return log


def test_quality_report_counts_each_problem_with_examples(
    messy: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    answer = client.get("/v1/profiles/quality", headers=admin_headers)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["profiles"], report["with_problems"]) == (5, 3)
    found = {(g["field"], g["problem"]): g for g in report["problems"]}
    postal = [g for key, g in found.items() if key[0] == "address.postalCode"]
    assert sorted(g["profiles"] for g in postal) == [1, 1]
    assert {e["value"] for g in postal for e in g["examples"]} == {"1234567", "123"}
    (gender,) = [g for key, g in found.items() if key[0] == "gender"]
    assert (gender["problem"], gender["examples"]) == (
        "unrecognised gender",
        [{"profile_id": messy.profile_of("user_id", "bert"), "value": "robot"}],
    )
    (salutation,) = [g for key, g in found.items() if key[0] == "salutation"]
    assert salutation["examples"][0]["profile_id"] == messy.profile_of("user_id", "anna")
    assert len(report["problems"]) == 4
    none = client.get("/v1/profiles/quality", params={"examples": 0}, headers=admin_headers)
    assert all(g["examples"] == [] for g in none.json()["problems"])


def test_quality_report_of_a_clean_store(client: TestClient, admin_headers: dict[str, str]) -> None:
    answer = client.get("/v1/profiles/quality", headers=admin_headers)
    assert answer.json() == {"profiles": 0, "with_problems": 0, "problems": []}


def test_profiles_filtered_by_a_quality_problem(
    messy: Log, client: TestClient, admin_headers: dict[str, str]
) -> None:
    def ids(**params: Any) -> list[str]:
        answer = client.get("/v1/profiles", params=params, headers=admin_headers)
        assert answer.status_code == 200, answer.text
        return [p["id"] for p in answer.json()["items"]]

    of = messy.profile_of
    assert ids(quality="address.postalCode") == sorted(
        [of("user_id", "bert"), of("user_id", "carl")]
    )
    assert ids(quality="gender") == [of("user_id", "bert")]
    assert ids(quality="any") == sorted(of("user_id", u) for u in ("anna", "bert", "carl"))
    assert ids(quality="birthday") == []
    assert ids(quality="x' OR '1'='1") == []
    first = client.get(
        "/v1/profiles", params={"quality": "any", "limit": 2}, headers=admin_headers
    ).json()
    rest = client.get(
        "/v1/profiles",
        params={"quality": "any", "limit": 2, "cursor": first["next_cursor"]},
        headers=admin_headers,
    ).json()
    assert [p["id"] for p in first["items"] + rest["items"]] == ids(quality="any")
    assert rest["next_cursor"] is None
