"""The dashboard without a browser (both backends): log in, roles, CSRF, every view renders
the demo-like data, personal data hidden from viewers, trait values escaped."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from closedloop import feeds, profiles, segments, surveys
from closedloop.access import users as accounts
from closedloop.web import create_app
from tests.conftest import make_settings, wait_for
from tests.profiles.conftest import Log, held_open, identify, track

PASSWORD = "correct horse battery"


@pytest.fixture
def shop(engine: Engine, db_url: str) -> Log:
    log = Log(engine, make_settings(db_url))
    log.send(
        identify(
            "anna",
            email="anna@example.de",
            phone="0351 1234567",
            firstName="Anna",
            lastName="<script>alert(1)</script>",
            gender="w",
            address={"city": "Dresden", "postalCode": "01067"},
            consent={"surveys": True, "crm_sync": True},
            bio='<img src=x onerror="alert(2)">',
        ),
        track("Order Completed", "anna", properties={"revenue": 10}),
        track("NPS Answered", "anna", properties={"score": 3, "comment": "zu teuer"}),
        identify("bob", email="bob@example.de", phone="0341 7654321", lastName="Becker"),
    )
    log.process()
    segments.save_segment(
        engine,
        log.settings,
        "dresden",
        segments.condition_tree('trait address.city = "Dresden"'),
        create=True,
    )
    for name, role in (("ada", "admin"), ("mia", "marketer"), ("abe", "agent"), ("vic", "viewer")):
        accounts.add_user(engine, name, role=role, password=PASSWORD, locale="en")
    return log


@pytest.fixture
def app_client(shop: Log) -> Iterator[TestClient]:
    with TestClient(create_app(shop.settings, engine=shop.engine)) as client:
        yield client


def login(client: TestClient, name: str, password: str = PASSWORD) -> Any:
    form = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    return client.post(
        "/login",
        data={"name": name, "password": password, "csrf": token.group(1), "next": "/"},
        follow_redirects=False,
    )


def csrf_of(client: TestClient, path: str = "/") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found is not None
    return found.group(1)


def test_login_roles_and_views(app_client: TestClient, shop: Log) -> None:
    client = app_client
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")
    bad = login(client, "ada", "wrong password!")
    assert bad.status_code == 401 and "Name oder Passwort falsch" in bad.text
    assert login(client, "nobody", PASSWORD).status_code == 401
    done = login(client, "ada")
    assert done.status_code == 303
    cookie = done.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    for path in (
        "/",
        "/customers",
        "/segments",
        "/segments/editor",
        "/surveys",
        "/feeds",
        "/quality",
        "/privacy",
    ):
        answer = client.get(path)
        assert answer.status_code == 200, path
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
    found = client.get("/customers", params={"q": "+49 351 1234567"}, follow_redirects=False)
    assert found.status_code == 303
    page = client.get(found.headers["location"])
    assert page.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and "<script>alert" not in page.text
    assert 'onerror="alert' not in page.text
    assert "Order Completed" in page.text and "anna@example.de" in page.text
    count = client.get("/segments/count", params={"condition": 'trait address.city = "Dresden"'})
    assert '<strong id="live-count">1</strong>' in count.text
    assert re.search(r'<a href="/customers/[^"]+">Anna [^<]+</a>', count.text), count.text
    broken = client.get("/segments/count", params={"condition": 'trait city = "x" andd mood'})
    assert "line 1, column 21" in broken.text
    assert "trait city = &#34;x&#34; andd mood\n" + " " * 20 + "^" in broken.text
    assert "Nobody found" in client.get("/customers", params={"q": "nobody@example.de"}).text


def test_agent_only_looks_up_customers(app_client: TestClient) -> None:
    client = app_client
    assert login(client, "abe").headers["location"] == "/customers"
    assert client.get("/customers", params={"q": "bob@example.de"}).status_code == 200
    for path in ("/segments/editor", "/segments", "/surveys", "/feeds", "/privacy", "/quality"):
        assert client.get(path).status_code == 403, path
    assert client.get("/", follow_redirects=False).headers["location"] == "/customers"


def test_viewer_sees_no_personal_data(app_client: TestClient, shop: Log) -> None:
    client = app_client
    login(client, "vic")
    assert client.get("/customers").status_code == 403
    assert client.get("/segments/editor").status_code == 403
    overview = client.get("/")
    assert overview.status_code == 200 and "anna" not in overview.text.lower()
    assert client.get("/privacy").status_code == 403
    assert client.get("/quality").status_code == 403


def test_csrf_is_checked_on_every_form(app_client: TestClient, shop: Log) -> None:
    client = app_client
    login(client, "mia")
    feeds.save_feed(
        shop.engine,
        {
            "name": "keys",
            "columns": [{"name": "key", "source": "customer_key"}],
            "destination": {"type": "local", "path": "crm"},
        },
        create=True,
    )
    assert client.post("/feeds/keys/run", data={}).status_code == 403
    assert client.post("/feeds/keys/run", data={"csrf": "forged"}).status_code == 403
    assert feeds.list_runs(shop.engine, "keys") == []
    token = csrf_of(client, "/feeds")
    queued = client.post("/feeds/keys/run", data={"csrf": token}, follow_redirects=False)
    assert queued.status_code == 303
    assert [r.trigger for r in feeds.list_runs(shop.engine, "keys")] == ["manual"]
    assert client.post("/logout", data={"csrf": "forged"}).status_code == 403
    out = client.post("/logout", data={"csrf": token}, follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 303  # the session ended


def test_german_by_user_setting(app_client: TestClient, shop: Log) -> None:
    client = app_client
    login(client, "ada")
    token = csrf_of(client)
    client.post("/settings/locale", data={"csrf": token, "locale": "de", "back": "/"})
    page = client.get("/")
    assert "Übersicht" in page.text and 'lang="de"' in page.text
    assert profiles is not None and surveys is not None


def test_csv_exports_follow_the_filters(app_client: TestClient, shop: Log) -> None:
    from datetime import UTC, datetime

    from closedloop.surveys._tables import survey_answers

    pid = shop.profile_of("user_id", "anna") or ""
    at = datetime(2026, 11, 20, 10, tzinfo=UTC)
    with shop.engine.begin() as conn:
        conn.execute(
            survey_answers.insert(),
            [
                {
                    "invitation_id": f"inv_{n}",
                    "survey": "nps",
                    "profile_id": pid,
                    "score": score,
                    "comment": comment,
                    "answered_at": at,
                    "updated_at": at,
                }
                for n, (score, comment) in enumerate(
                    [(2, '=HYPERLINK("http://evil")'), (10, "Super"), (5, "zu teuer")]
                )
            ],
        )
    client = app_client
    login(client, "mia")
    answer = client.get("/surveys/nps/comments.csv", params={"group": "detractors"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    lines = answer.content.decode("utf-8-sig").splitlines()
    assert lines[0] == "score;group;answered_at;segments;comment"
    assert len(lines) == 3 and all(";detractors;" in line for line in lines[1:])
    assert any(
        line.endswith(';\'=HYPERLINK(""http://evil"")"') or "'=HYPERLINK" in line for line in lines
    )
    searched = client.get("/surveys/nps/comments.csv", params={"text": "TEUER"})
    assert searched.content.decode("utf-8-sig").count("\r\n") == 2
    timeline = client.get(f"/customers/{pid}/timeline.csv", params={"text": "order"})
    rows = timeline.content.decode("utf-8-sig").splitlines()
    assert len(rows) == 2 and "Order Completed" in rows[1]
    for before in (str(2**63), "\u00b2", "x"):  # past the store's ids, no ASCII number
        page = client.get(f"/customers/{pid}/timeline", params={"before": before})
        assert page.status_code == 400, before
    assert client.get("/segments.csv").status_code == 200
    assert client.get("/privacy/audit.csv").status_code == 403  # admins only
    login(client, "vic")
    assert client.get("/surveys/nps/comments.csv").status_code == 403  # no comments for viewers


def test_mood_counts_in_one_pass_match_the_conditions(app_client: TestClient, shop: Log) -> None:
    from closedloop import clock

    engine, settings = shop.engine, shop.settings
    now = clock.now()
    with engine.connect() as conn:
        counted = segments.count_moods(conn, settings, now)
    for label in ("positive", "neutral", "negative"):
        assert (
            counted[label] == segments.preview(engine, settings, f"mood is {label}", now=now).count
        )
    assert sum(counted.values()) == 2
    recorded = segments.record_moods(engine, settings, now)
    latest = segments.latest_moods(engine)
    assert latest is not None and latest[1] == recorded == counted
    from datetime import timedelta

    segments.record_moods(engine, settings, now + timedelta(minutes=1))
    login(app_client, "ada")
    page = app_client.get("/").text
    assert "as of" in page and 'aria-label="share over time' in page


def test_why_not_surveyed_names_each_rule(app_client: TestClient, shop: Log) -> None:
    surveys.save_survey(
        shop.engine,
        {
            "name": "nps",
            "max_delay_days": 14,
            "window": {
                "start": "00:00",
                "end": "23:59",
                "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            },
        },
        create=True,
    )
    login(app_client, "mia")
    page = app_client.get("/surveys/nps", params={"who": "bob@example.de"})
    assert page.status_code == 200 and 'id="why-now"' in page.text
    for rule in ("max_delay_days", "consent", "interval_weeks", "monthly_budget"):
        assert f"<code>{rule}</code>" in page.text
    assert "`surveys` not granted" in page.text  # bob gave no consent: surveys are opt-in
    assert "not while a lasting rule fails" in page.text
    assert "Nobody found" in app_client.get("/surveys/nps", params={"who": "x@y.de"}).text


@pytest.mark.parametrize("target", ["//evil.example/x", "/\\evil.example", "https://evil.example"])
def test_login_never_redirects_off_the_hub(app_client: TestClient, target: str) -> None:
    form = app_client.get("/login", params={"next": target}).text
    token = re.search(r'name="csrf" value="([^"]+)"', form)
    assert token is not None and f'value="{target}"' not in form
    done = app_client.post(
        "/login",
        data={"name": "ada", "password": PASSWORD, "csrf": token.group(1), "next": target},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == "/"
    good = app_client.get("/login", params={"next": "/segments?x=1"}).text
    assert 'value="/segments?x=1"' in good


def test_comments_by_segment_as_of_the_answer(app_client: TestClient, shop: Log) -> None:
    from datetime import UTC, datetime, timedelta

    from closedloop.surveys._tables import survey_answers

    later = datetime.now(UTC) + timedelta(minutes=1)  # after anna entered `dresden`
    rows = [("anna", 3, "Lieferung zu spät"), ("bob", 4, "Preis zu hoch"), ("anna", 9, "Toll")]
    with shop.engine.begin() as conn:
        conn.execute(
            survey_answers.insert(),
            [
                {
                    "invitation_id": f"seg_{n}",
                    "survey": "nps",
                    "profile_id": shop.profile_of("user_id", who) or "",
                    "score": score,
                    "comment": comment,
                    "answered_at": later,
                    "updated_at": later,
                }
                for n, (who, score, comment) in enumerate(rows)
            ],
        )
    login(app_client, "mia")
    exported = app_client.get("/surveys/nps/comments.csv", params={"segment": "dresden"})
    text = exported.content.decode("utf-8-sig")
    assert "Lieferung zu spät" in text and "Toll" in text and "Preis zu hoch" not in text
    both = app_client.get(
        "/surveys/nps/comments.csv", params={"segment": "dresden", "group": "detractors"}
    ).content.decode("utf-8-sig")
    assert both.count("\r\n") == 2 and "Lieferung zu spät" in both


def test_an_admin_erases_a_person_from_the_privacy_page(app_client: TestClient, shop: Log) -> None:
    client = app_client
    login(client, "ada")
    token = csrf_of(client, "/privacy")
    good = {"kind": "email", "value": "bob@example.de", "reference": "ticket 4711"}
    # bad input: named field, 400, nothing erased, the form keeps what was typed
    for form, field in (
        ({**good, "kind": "shoe size"}, "kind"),
        ({**good, "value": " "}, "value"),
        ({**good, "value": "x" * 321}, "value"),
        ({**good, "reference": ""}, "reference"),
        (good, "confirm"),  # no confirmation
        ({**good, "kind": "phone", "value": "not a phone", "confirm": "yes"}, "value"),
        ({**good, "kind": "email", "value": "<script>@x", "confirm": "yes"}, "value"),
    ):
        answer = client.post("/privacy/erasures", data={**form, "csrf": token})
        assert answer.status_code == 400, (form, answer.text[:300])
        assert f'id="erase-{field}" name="{field}"' in answer.text or field == "confirm"
        assert 'aria-invalid="true"' in answer.text and 'role="alert"' in answer.text
        assert "<script>@x" not in answer.text
    assert shop.profile_of("email", "bob@example.de") is not None
    forged = client.post("/privacy/erasures", data={**good, "confirm": "yes", "csrf": "forged"})
    assert forged.status_code == 403
    done = client.post(
        "/privacy/erasures", data={**good, "confirm": "yes", "csrf": token}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"].startswith("/privacy?done=er_")
    page = client.get(done.headers["location"])
    assert "recorded" in page.text and "dashboard: ada (ticket 4711)" in page.text
    assert shop.profile_of("email", "bob@example.de") is None
    assert shop.profile_of("email", "anna@example.de") is not None
    # only admins
    client.post("/logout", data={"csrf": csrf_of(client)})
    login(client, "mia")
    denied = client.post(
        "/privacy/erasures", data={**good, "confirm": "yes", "csrf": csrf_of(client)}
    )
    assert denied.status_code == 403


@pytest.mark.parametrize(
    "name", ["\u0663", "nps\u2019s", 'a"b', "a\r\nSet-Cookie: x=1", "\ufeff", "x" * 300]
)
def test_a_csv_download_names_its_file_safely(app_client: TestClient, name: str) -> None:
    """A part of the path becomes the file name: a character Latin-1 cannot encode made
    the header fail (a 500), a quote or a line break would have broken it."""
    login(app_client, "ada")
    for path in (
        f"/surveys/{quote(name, safe='')}/comments.csv",
        f"/feeds/{quote(name, safe='')}/runs.csv",
    ):
        answer = app_client.get(path)
        assert answer.status_code in (200, 404), (path, answer.status_code)
        if answer.status_code == 200:
            disposition = answer.headers["content-disposition"]
            assert re.fullmatch(r'attachment; filename="[A-Za-z0-9._-]+\.csv"', disposition)


def test_data_quality_page_lists_problems_and_open_refused_joins(
    app_client: TestClient, shop: Log
) -> None:
    """The data steward's page: each master-data problem with its customers (values as
    they came, escaped, linked) and the open refused joins, most often met first."""
    shop.send(
        identify("carl", gender="robot", address={"postalCode": "1234567", "country": "DE"}),
        identify("dora", salutation="Herr", gender="w"),
        identify("eve", gender='<b onmouseover="x">'),  # shown as the value that came
        identify("dad", "shared-pc"),
        *(identify("son", "shared-pc") for _ in range(3)),
    )
    shop.process()
    client = app_client
    login(client, "mia")
    page = client.get("/quality")
    assert page.status_code == 200, page.text
    text = page.text
    assert "3 of 7 customers have master data that could not be cleaned." in text
    carl = shop.profile_of("user_id", "carl") or ""
    assert f'<a href="/customers/{carl}">1234567</a>' in text
    assert "too many digits for a DE postal code" in text and "unrecognised gender" in text
    assert "salutation contradicts gender `female`" in text
    eve = shop.profile_of("user_id", "eve") or ""
    assert f'<a href="/customers/{eve}">&lt;b onmouseover=&#34;x&#34;&gt;</a>' in text
    assert "<b onmouseover" not in text
    assert "<code>shared-pc</code>" in text and "different user ids" in text
    son = shop.profile_of("user_id", "son") or ""
    assert f'href="/customers/{son}"' in text
    csrf = csrf_of(client)
    client.post("/settings/locale", data={"csrf": csrf, "locale": "de", "back": "/quality"})
    german = client.get("/quality").text
    assert "Datenqualität" in german and "Abgelehnte Zusammenführungen" in german
    assert "Bei 3 von 7 Kunden ließen sich die Stammdaten nicht bereinigen." in german


def test_customer_screen_names_the_accounts_kept_apart(app_client: TestClient, shop: Log) -> None:
    """A family tablet: the agent sees that the caller's profile shares a device with
    another account, and opens it."""
    shop.send(identify("mother", "family-tablet"), identify("anna", "family-tablet"))
    shop.process()
    client = app_client
    login(client, "abe")
    anna = shop.profile_of("user_id", "anna") or ""
    mother = shop.profile_of("user_id", "mother") or ""
    page = client.get(f"/customers/{anna}").text
    assert "Kept apart" in page
    assert (
        f'<a href="/customers/{mother}">{mother}</a>: anonymous_id <code>family-tablet</code>'
        in page
    )
    assert "1\u00d7 (different user ids)" in page  # the multiplication sign
    other = client.get(f"/customers/{mother}").text
    assert f'<a href="/customers/{anna}">{anna}</a>' in other
    plain = client.get(f"/customers/{shop.profile_of('user_id', 'bob')}").text
    assert "Kept apart" not in plain


def test_overview_shows_events_behind_an_older_transaction(
    app_client: TestClient, shop: Log
) -> None:
    """PostgreSQL: events that wait for a transaction still open elsewhere show as such."""
    assert login(app_client, "ada").status_code == 303
    assert "Behind an older open transaction" not in app_client.get("/").text
    with held_open(shop, application="<b>report</b>") as held:
        shop.send(*(track("Page Viewed", anonymous_id=a) for a in ("x1", "x2")), wait=False)
        # (an analyze elsewhere may be the oldest open transaction for a moment)
        wait_for(lambda: f"PID {held.pid} · " in app_client.get("/").text)
        page = app_client.get("/").text
    assert "Behind an older open transaction: <strong>2</strong>" in page
    # Which session holds them, its application name (any client's text) escaped.
    assert f"Held by: PID {held.pid} · " in page
    assert "&lt;b&gt;report&lt;/b&gt; · " in page
    assert "<b>report</b>" not in page
    assert "idle in transaction · open for " in page
