"""`closedloop profiles show`, `worker --once` and `rebuild` against a real store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from closedloop import profiles
from closedloop.cli import app
from tests.conftest import make_settings
from tests.profiles.conftest import Log, held_open, identify, track


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[CliRunner]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLOSEDLOOP_DATABASE_URL", db_url)
    monkeypatch.setenv("CLOSEDLOOP_SECRET_KEY", "test-secret-" + "y" * 20)  # as make_settings
    yield CliRunner()


@pytest.fixture
def log(engine: Engine, db_url: str) -> Log:
    log = Log(engine, make_settings(db_url))
    log.send(track("Product Viewed", anonymous_id="anon-1", properties={"category": "Laufschuhe"}))
    log.send(
        identify(
            "cust-7",
            "anon-1",
            email="Erika.Musterfrau@Example.com",
            phone="0351 1234567",
            gender="Frau",
            lastName="Musterfrau",
            address={"postalCode": 1067, "city": "Dresden"},
        )
    )
    return log


def test_worker_once_processes_and_profiles_show_finds_by_phone(cli: CliRunner, log: Log) -> None:
    result = cli.invoke(app, ["worker", "--once"])
    assert result.exit_code == 0, result.output
    assert "2 events processed" in result.output
    result = cli.invoke(app, ["profiles", "show", "--phone", "+49 351 1234567", "--events", "5"])
    assert result.exit_code == 0, result.output
    for text in (
        "Sehr geehrte Frau Musterfrau",
        "01067 Dresden",
        "Laufschuhe (1)",
        "Product Viewed",
    ):
        assert text in result.output, text


def test_profiles_show_json_and_errors(cli: CliRunner, log: Log) -> None:
    log.process()
    result = cli.invoke(
        app, ["profiles", "show", "--email", "ERIKA.musterfrau@example.com", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["masterdata"]["postal_code"] == "01067"
    assert [e["event"] for e in doc["events"]] == [None, "Product Viewed"]
    missing = cli.invoke(app, ["profiles", "show", "--user-id", "nobody"])
    assert missing.exit_code == 1
    assert "no profile with user id `nobody`" in missing.output
    bad = cli.invoke(app, ["profiles", "show", "--email", "not-an-address"])
    assert bad.exit_code == 1
    assert "invalid `email`" in bad.output
    both = cli.invoke(app, ["profiles", "show", "--email", "a@b.de", "--user-id", "x"])
    assert both.exit_code == 1
    assert "exactly one" in both.output
    unknown = cli.invoke(app, ["profiles", "show", "--id", "p_nobody"])
    assert unknown.exit_code == 1
    assert "no profile `p_nobody`" in unknown.output


def test_rebuild_command_gives_the_same_profile(cli: CliRunner, log: Log) -> None:
    log.process()
    before = profiles.lag(log.engine)
    first = cli.invoke(app, ["profiles", "show", "--user-id", "cust-7", "--json"]).output
    result = cli.invoke(app, ["rebuild"])
    assert result.exit_code == 0, result.output
    assert "rebuild: 2 events processed" in result.output
    assert "0 left" in result.output
    assert before.events == 0
    again = cli.invoke(app, ["profiles", "show", "--user-id", "cust-7", "--json"]).output
    assert json.loads(again) == json.loads(first)


def test_rebuild_names_the_transaction_that_holds_events_back(cli: CliRunner, log: Log) -> None:
    """PostgreSQL: events behind a transaction still open elsewhere are left to the
    processor after a wait, and the rebuild names that session (its application name is
    any client's text: printed, not read as markup)."""
    log.process()
    with held_open(log, application="[red]report") as held:
        log.send(track("Page Viewed", anonymous_id="late"), wait=False)
        result = cli.invoke(app, ["rebuild"])
    assert result.exit_code == 0, result.output
    assert "1 left" in result.output
    assert "1 of them wait for an older transaction that is still open" in result.output
    assert f"rebuild: held by PID {held.pid} · " in result.output
    assert "[red]report · " in result.output
    assert "idle in transaction, open for " in result.output
    log.process()


def test_customers_data_is_printed_as_text_not_as_markup(cli: CliRunner, log: Log) -> None:
    """Ids, traits and event names are the customers' (or an attacker's): `[/b]` would be
    an unmatched Rich tag (it raised) and `[link=...]` a link, had the CLI read markup."""
    log.send(
        identify("[/b]cust", "[link=https://evil.example]anon[/link]", lastName="[red]Muster"),
        track("[/] Order", user_id="[/b]cust"),
        identify("[/b]other", "[link=https://evil.example]anon[/link]"),  # a refused join
    )
    log.process()
    shown = cli.invoke(app, ["profiles", "show", "--user-id", "[/b]cust"])
    assert shown.exit_code == 0, shown.output
    for text in ("[red]Muster", "[/] Order", "[link=https://evil.example]anon[/link]"):
        assert text in shown.output, text
    listed = cli.invoke(app, ["profiles", "conflicts"])
    assert listed.exit_code == 0, listed.output
    assert "via anonymous_id=[link=https://evil.example]anon[/link]" in listed.output


def test_customers_data_cannot_drive_the_terminal(cli: CliRunner, log: Log) -> None:
    """Escape sequences in traits, event names and ids (clear the screen, set the window's
    title, C1's one-byte CSI) are shown escaped, in the summary, the events table, errors
    and `--json` (which stays JSON)."""
    name = "\x1b[2J\x1b]0;pwned\x07Muster\x9b31m"
    log.send(
        identify("esc\x1b[5mcust", "anon-esc", lastName=name),
        track("\x1b[31mOrder\x7f", user_id="esc\x1b[5mcust"),
    )
    log.process()
    shown = cli.invoke(app, ["profiles", "show", "--user-id", "esc\x1b[5mcust", "--events", "5"])
    assert shown.exit_code == 0, shown.output
    assert not any(ch in shown.output for ch in "\x1b\x07\x9b\x7f")
    for text in (
        "\\u001b[2J\\u001b]0;pwned\\u0007Muster\\u009b31m",
        "\\u001b[31mOrder\\u007f",
        "esc\\u001b[5mcust",
    ):
        assert text in shown.output, text
    as_json = cli.invoke(app, ["profiles", "show", "--user-id", "esc\x1b[5mcust", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert "\x1b" not in as_json.output and "\x9b" not in as_json.output
    assert json.loads(as_json.output)["traits"]["lastName"] == name
    missing = cli.invoke(app, ["profiles", "show", "--user-id", "\x1b[2Jnobody"])
    assert missing.exit_code == 1
    assert "\x1b" not in missing.output and "\\u001b[2Jnobody" in missing.output


def test_profiles_conflicts_lists_refused_joins(cli: CliRunner, log: Log) -> None:
    assert cli.invoke(app, ["profiles", "conflicts"]).output.strip() == "no refused joins"
    log.send(identify("mother", "family-tablet"), identify("daughter", "family-tablet"))
    log.process()
    result = cli.invoke(app, ["profiles", "conflicts", "--json"])
    assert result.exit_code == 0, result.output
    (found,) = json.loads(result.output)
    assert found["profile_id"] == log.profile_of("user_id", "daughter")
    assert found["other_profile_id"] == log.profile_of("user_id", "mother")
    assert (found["reason"], found["occurrences"], found["settled"]) == (
        "different_user_ids",
        1,
        False,
    )
    assert found["identity"] == {"kind": "anonymous_id", "value": "family-tablet"}
    table = cli.invoke(app, ["profiles", "conflicts", "--reason", "different_user_ids"])
    assert table.exit_code == 0 and "family-tablet" in table.output
    none = cli.invoke(app, ["profiles", "conflicts", "--reason", "anonymous_id_limit"])
    assert none.output.strip() == "no refused joins"
    bad = cli.invoke(app, ["profiles", "conflicts", "--reason", "kiosk"])
    assert bad.exit_code == 1
    assert "invalid `reason` `kiosk`: use one of different_user_ids, anonymous_id_limit" in (
        bad.output
    )


def test_profiles_conflicts_open_ones_by_occurrences(cli: CliRunner, log: Log) -> None:
    log.send(identify("mother", "family-tablet"), identify("daughter", "family-tablet"))
    log.send(identify("dad", "shared-pc"), *(identify("son", "shared-pc") for _ in range(3)))
    log.send({"type": "alias", "previousId": "daughter", "userId": "mother"})
    log.process()
    everything = cli.invoke(app, ["profiles", "conflicts"])
    assert everything.exit_code == 0, everything.output
    assert everything.output.count("different_user_ids") == 2 and "settled" in everything.output
    result = cli.invoke(app, ["profiles", "conflicts", "--open", "--sort", "occurrences"])
    assert result.exit_code == 0, result.output
    (line,) = result.output.strip().splitlines()
    assert "via anonymous_id=shared-pc  3x" in line and "settled" not in line
    (settled,) = json.loads(
        cli.invoke(app, ["profiles", "conflicts", "--settled", "--json"]).output
    )
    assert settled["identity"]["value"] == "family-tablet"
    bad = cli.invoke(app, ["profiles", "conflicts", "--sort", "loudest"])
    assert bad.exit_code == 1
    assert "invalid `sort` `loudest`: use one of newest, occurrences, last_seen" in bad.output


def test_profiles_quality_summary_and_the_customers_to_fix(cli: CliRunner, log: Log) -> None:
    clean = cli.invoke(app, ["profiles", "quality"])
    assert clean.exit_code == 0 and clean.output.strip() == "0 profiles, 0 with problems"
    log.send(
        identify("anna", gender="w", salutation="Herr"),
        identify("carl", address={"postalCode": "1234567", "country": "DE"}),
        identify("dora", address={"postalCode": "01067", "country": "DE"}),
    )
    log.process()
    summary = cli.invoke(app, ["profiles", "quality"])
    assert summary.exit_code == 0, summary.output
    lines = summary.output.strip().splitlines()
    assert lines[0] == "4 profiles, 2 with problems"  # the fixture's customer is clean
    carl = log.profile_of("user_id", "carl")
    assert any(
        "address.postalCode: too many digits for a DE postal code" in line
        and f"{carl} (1234567)" in line
        for line in lines[1:]
    ), lines
    listed = cli.invoke(app, ["profiles", "quality", "--field", "address.postalCode"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.strip() == (
        f"{carl}  address.postalCode=1234567: too many digits for a DE postal code"
    )
    as_json = json.loads(
        cli.invoke(app, ["profiles", "quality", "--field", "any", "--json"]).output
    )
    assert sorted(item["profile_id"] for item in as_json) == sorted(
        [carl, log.profile_of("user_id", "anna")]
    )
    none = cli.invoke(app, ["profiles", "quality", "--field", "birthday"])
    assert none.output.strip() == "no profiles with such problems"
    bad = cli.invoke(app, ["profiles", "quality", "--field", ""])
    assert bad.exit_code == 1 and "invalid `quality`" in bad.output
