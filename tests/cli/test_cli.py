"""The command line, driven through Typer's runner against a real store on each backend."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from closedloop import clock, ingest, store
from closedloop.access import users as accounts
from closedloop.cli import app
from closedloop.config import IngestSettings
from closedloop.errors import PermissionDeniedError
from closedloop.ingest import log
from closedloop.ingest.messages import normalise_message
from tests.helpers import stored


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[CliRunner]:
    """A runner whose commands use `db_url` (and no `.env` from the working directory)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLOSEDLOOP_DATABASE_URL", db_url)
    yield CliRunner()


def _run(cli: CliRunner, *args: str) -> tuple[int, str]:
    result = cli.invoke(app, list(args))
    return result.exit_code, result.output


def test_db_upgrade_reaches_head(cli: CliRunner, db_url: str) -> None:
    code, out = _run(cli, "db", "upgrade")
    assert code == 0, out
    assert f"revision {store.head_revision()}" in out
    code, out = _run(cli, "db", "current")
    assert code == 0
    assert f"current: {store.head_revision()}" in out


@pytest.mark.parametrize("command", [("db", "upgrade"), ("worker", "--once")])
def test_an_upgrade_over_processed_events_says_to_rebuild(
    cli: CliRunner, db_url: str, command: tuple[str, ...]
) -> None:
    """Every command that migrates the store warns where a rebuild is due, once."""
    engine = store.create_store_engine(db_url)
    try:
        store.upgrade(engine, "0025")
        with engine.begin() as conn:  # the processor had applied events
            conn.exec_driver_sql("UPDATE processor_cursors SET event_id = 3 WHERE name = 'main'")
    finally:
        engine.dispose()
    code, out = _run(cli, *command)
    assert code == 0, out
    assert "warning: events processed before revision 0026" in out
    assert "until `closedloop rebuild`." in out
    code, out = _run(cli, "db", "upgrade")
    assert (code, out.strip()) == (0, f"store at revision {store.head_revision()}")


def test_sources_add_prints_the_key_once_and_it_works(
    cli: CliRunner, db_url: str, engine: Engine
) -> None:
    code, out = _run(cli, "sources", "add", "shop-web", "--kind", "web", "--json")
    assert code == 0, out
    made = json.loads(out)
    assert set(made) == {"name", "kind", "write_key"}
    assert (made["name"], made["kind"]) == ("shop-web", "web")
    resolver = ingest.WriteKeyResolver(engine, cache_seconds=0)
    assert resolver.resolve(made["write_key"]).name == "shop-web"
    code, out = _run(cli, "sources", "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [s["name"] for s in listed] == ["shop-web"]
    assert made["write_key"] not in out


def test_sources_disable_enable_rotate(cli: CliRunner, engine: Engine) -> None:
    _, out = _run(cli, "sources", "add", "pos", "--kind", "pos", "--json")
    old_key = json.loads(out)["write_key"]
    assert _run(cli, "sources", "disable", "pos")[0] == 0
    assert ingest.get_source(engine, "pos").enabled is False
    assert _run(cli, "sources", "enable", "pos")[0] == 0
    assert ingest.get_source(engine, "pos").enabled is True
    code, out = _run(cli, "sources", "rotate", "pos", "--json")
    assert code == 0, out
    new_key = json.loads(out)["write_key"]
    assert new_key != old_key
    resolver = ingest.WriteKeyResolver(engine, cache_seconds=0)
    assert resolver.resolve(new_key).name == "pos"
    with pytest.raises(PermissionDeniedError):
        resolver.resolve(old_key)


def test_sources_bad_input_exits_1_with_a_message(cli: CliRunner, engine: Engine) -> None:
    code, out = _run(cli, "sources", "add", "x", "--kind", "fax")
    assert code == 1
    assert "fax" in out and "web" in out
    code, out = _run(cli, "sources", "add", "Bad Name!", "--kind", "web")
    assert code == 1
    assert "name" in out
    _run(cli, "sources", "add", "web", "--kind", "web")
    code, out = _run(cli, "sources", "add", "web", "--kind", "web")
    assert code == 1
    assert "exists" in out
    code, out = _run(cli, "sources", "rotate", "nope")
    assert code == 1
    assert "nope" in out
    assert "Traceback" not in out


def test_import_command_reports_lines_and_dedupes(
    cli: CliRunner, engine: Engine, tmp_path: Path
) -> None:
    _run(cli, "sources", "add", "mail", "--kind", "email")
    path = tmp_path / "mail.jsonl"
    path.write_bytes(
        orjson.dumps({"type": "track", "event": "Email Opened", "userId": "u1"})
        + b"\n{oops\n"
        + orjson.dumps({"type": "track", "event": "Email Clicked", "userId": "u1"})
        + b"\n"
    )
    code, out = _run(cli, "import", str(path), "--source", "mail")
    assert code == 0, out
    assert "2 accepted, 0 already stored, 1 rejected" in out
    assert "line 2" in out
    code, out = _run(cli, "import", str(path), "--source", "mail", "--json")
    assert code == 0
    report = json.loads(out)
    assert (report["accepted"], report["duplicates"], report["rejected"]) == (0, 2, 1)
    assert len(stored(engine)) == 2
    code, out = _run(cli, "import", str(path), "--source", "nope")
    assert code == 1
    assert "nope" in out


def test_events_tail_prints_newest_events_as_json(cli: CliRunner, engine: Engine) -> None:
    source = ingest.add_source(engine, "web", kind="web").source
    path_rows = [
        {"type": "page", "anonymousId": "a1", "name": f"P{i}", "messageId": f"m{i}"}
        for i in range(5)
    ]
    now = clock.now()
    rows = [
        normalise_message(
            m, call_type=None, limits=IngestSettings(), received_at=now, sent_at=None
        ).as_tuple(source.id)
        for m in path_rows
    ]
    with engine.begin() as conn:
        log.append(conn, rows)
    code, out = _run(cli, "events", "tail", "-n", "3")
    assert code == 0, out
    printed = [json.loads(line) for line in out.splitlines()]
    assert [p["messageId"] for p in printed] == ["m2", "m3", "m4"]
    assert printed[0]["source"] == "web"


def test_events_tail_shows_control_characters_escaped_and_stays_json(
    cli: CliRunner, engine: Engine
) -> None:
    """An event's text may hold terminal escape sequences (anyone with the public write key
    sends it): none reaches the terminal, and each line is still JSON with the same text."""
    source = ingest.add_source(engine, "web", kind="web").source
    hostile = "\x1b[2J\x1b]0;pwned\x07 \x9b31m \x7f Zoë"
    message = {"type": "track", "event": hostile, "anonymousId": "a1", "messageId": "m1"}
    row = normalise_message(
        message, call_type=None, limits=IngestSettings(), received_at=clock.now(), sent_at=None
    ).as_tuple(source.id)
    with engine.begin() as conn:
        log.append(conn, [row])
    code, out = _run(cli, "events", "tail")
    assert code == 0, out
    assert not any(ch in out for ch in "\x1b\x07\x9b\x7f")
    assert "\\u001b[2J\\u001b]0;pwned\\u0007 \\u009b31m \\u007f Zoë" in out
    assert json.loads(out)["event"] == hostile


def test_every_command_has_help_with_an_example(cli: CliRunner) -> None:
    groups = {
        "": ["init", "serve", "demo", "import", "sources", "events", "db"],
        "sources": ["add", "list", "disable", "enable", "rotate"],
        "events": ["tail"],
        "db": ["upgrade", "current"],
    }
    for group, commands in groups.items():
        for command in commands:
            args = [group, command, "--help"] if group else [command, "--help"]
            code, out = _run(cli, *args)
            assert code == 0, (args, out)
            assert "Example" in out, args


def test_help_paragraphs_are_wrapped_to_the_terminal(cli: CliRunner) -> None:
    """A docstring's line breaks are the source's, not the help's: each paragraph is
    wrapped to the terminal's width (the command list's descriptions too)."""
    wide = CliRunner()
    out = wide.invoke(app, ["profiles", "--help"], env={"COLUMNS": "200"}).output
    assert "the shared devices and kiosks to look at." in out, out
    out = wide.invoke(app, ["worker", "--help"], env={"COLUMNS": "200"}).output
    assert "keep segment membership current" in out, out


def test_init_writes_secrets_once_and_a_working_demo_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLOSEDLOOP_DATABASE_URL", raising=False)
    runner = CliRunner()
    first = runner.invoke(app, ["init"])
    assert first.exit_code == 0, first.output
    env = (tmp_path / ".env").read_text()
    assert (tmp_path / ".env").stat().st_mode & 0o777 == 0o600
    assert "CLOSEDLOOP_SECRET_KEY=" in env and "CLOSEDLOOP_ADMIN_TOKEN=" in env
    assert "admin token:" in first.output and "write key" in first.output
    second = runner.invoke(app, ["init"])
    assert second.exit_code == 0
    assert (tmp_path / ".env").read_text() == env  # nothing rotated on a second run
    demo_key = next(
        line.split("=", 1)[1]
        for line in env.splitlines()
        if line.startswith("CLOSEDLOOP_DEMO_WRITE_KEY=")
    )
    engine = store.create_store_engine(f"sqlite:///{tmp_path / 'closedloop.db'}")
    try:
        resolver = ingest.WriteKeyResolver(engine, cache_seconds=0)
        assert resolver.resolve(demo_key).name == "demo"
        password = next(
            line.split("=", 1)[1]
            for line in env.splitlines()
            if line.startswith("CLOSEDLOOP_DEMO_PASSWORD=")
        )
        assert f"user `demo`, password {password}" in first.output
        assert accounts.log_in(engine, "demo", password) is not None
        assert accounts.list_users(engine)[0].role == "admin"
    finally:
        engine.dispose()


def test_a_store_without_tables_names_the_command_that_sets_it_up(cli: CliRunner) -> None:
    """A command on a database nobody set up (a fresh file, an empty schema) says so and
    what to run, instead of the driver's traceback with its SQL."""
    for args in (
        ("profiles", "show", "--email", "erika@example.com"),
        ("profiles", "quality"),
        ("sources", "list"),
        ("events", "tail"),
    ):
        code, out = _run(cli, *args)
        assert code == 1, (args, out)
        assert "has no tables yet: run `closedloop init`, or `closedloop db upgrade`" in out, out
        assert "SELECT" not in out and "Traceback" not in out


def test_a_store_at_an_older_revision_names_both_revisions(cli: CliRunner, db_url: str) -> None:
    engine = store.create_store_engine(db_url)
    try:
        store.upgrade(engine, "0002")  # the event log, before identities and profiles
    finally:
        engine.dispose()
    code, out = _run(cli, "profiles", "show", "--email", "erika@example.com")
    assert code == 1, out
    head = store.head_revision()
    assert f"is at revision 0002, this closedloop needs {head}: run `closedloop db upgrade`" in out
    code, out = _run(cli, "db", "upgrade")
    assert code == 0, out
    code, out = _run(cli, "profiles", "show", "--email", "erika@example.com")
    assert (code, out.strip()) == (1, "error: no profile with email `erika@example.com`")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://crm:secret-pw@127.0.0.1:{port}/nowhere",
        "sqlite:///{tmp}/no-such-dir/closedloop.db",
    ],
)
def test_a_store_that_cannot_be_opened_is_named_without_its_password(
    url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLOSEDLOOP_DATABASE_URL", url.format(port=port, tmp=tmp_path))
    for args in (("sources", "list"), ("profiles", "show", "--phone", "0351 1234567")):
        code, out = _run(CliRunner(), *args)
        assert code == 1, out
        assert out.startswith("error: cannot open the store `"), out
        assert "secret-pw" not in out and "Traceback" not in out
    if url.startswith("postgresql"):
        assert f"`postgresql+psycopg://crm:***@127.0.0.1:{port}/nowhere`: connection" in out, out
    else:
        assert out.rstrip().endswith("closedloop.db`: unable to open database file"), out
