"""`closedloop privacy`: erasure, subject export, retention, key rotation, the audit log."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import typer
from rich.table import Table

from closedloop import privacy
from closedloop.cli._app import (
    app,
    console,
    handle_errors,
    one_identifier,
    open_store,
    settings,
    upgrade_store,
)

privacy_app = typer.Typer(
    help="Erasure, subject export, retention, key rotation and the audit log.\n\n"
    "Example: `closedloop privacy erase --email anna@example.com --by 'ticket 4711'`",
    no_args_is_help=True,
)
app.add_typer(privacy_app, name="privacy")

_EMAIL = typer.Option(None, help="E-mail address, any spelling.")
_PHONE = typer.Option(None, help="Phone number, any format.")
_USER = typer.Option(None, "--user-id", help="The shop's user id.")
_ANON = typer.Option(None, "--anonymous-id", help="A device's anonymous id.")
_KEY = typer.Option(None, "--customer-key", help="`v1.` + 64 hex digits.")
_PROFILE = typer.Option(None, "--profile-id", help="A profile id (merged ids too).")


def _one(
    email: str | None,
    phone: str | None,
    user_id: str | None,
    anonymous_id: str | None,
    customer_key: str | None,
    profile_id: str | None,
) -> tuple[str, str]:
    return one_identifier(
        {
            "email": email,
            "phone": phone,
            "user_id": user_id,
            "anonymous_id": anonymous_id,
            "customer_key": customer_key,
            "profile_id": profile_id,
        }
    )


def _actor(by: str | None) -> str:
    return f"cli:{getpass.getuser()}" + (f" ({by})" if by else "")


@privacy_app.command("erase")
def erase(
    email: str | None = _EMAIL,
    phone: str | None = _PHONE,
    user_id: str | None = _USER,
    anonymous_id: str | None = _ANON,
    customer_key: str | None = _KEY,
    profile_id: str | None = _PROFILE,
    by: str | None = typer.Option(None, "--by", help="Who asked (a ticket, not a name)."),
    as_json: bool = typer.Option(False, "--json", help="Print the erasure as JSON."),
) -> None:
    """Erase a person (GDPR Art. 17): her whole identity cluster from every table; her
    identifiers are suppressed, so later events are dropped and she is not created again.

    Example: `closedloop privacy erase --phone '0351 1234567' --by 'ticket 4711'`
    """
    kind, value = _one(email, phone, user_id, anonymous_id, customer_key, profile_id)
    config = settings()
    with handle_errors():
        engine = open_store(config)
        upgrade_store(engine)
        done = privacy.request_erasure(
            engine, config, kind=kind, value=value, requested_by=_actor(by)
        )
    if as_json:
        console.print(json.dumps(done.as_json()))
        return
    erased = {k: v for k, v in done.counts.items() if v}
    console.print(
        f"erasure {done.id}: {done.state}"
        + (f"; {', '.join(f'{k} {v}' for k, v in erased.items())}" if erased else "")
        + (f"; {done.error}" if done.error else ""),
    )
    if done.state != "done":
        raise typer.Exit(1)


@privacy_app.command("erasures")
def erasures(
    limit: int = typer.Option(50, min=1, max=1000, help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Erasure requests with who asked, when, their state and counts per table.

    Example: `closedloop privacy erasures`
    """
    config = settings()
    with handle_errors():
        found = privacy.list_erasures(open_store(config), limit=limit)
    if as_json:
        console.print(json.dumps([e.as_json() for e in found]))
        return
    table = Table()
    for column in ("id", "state", "by", "identifier", "requested", "rows erased"):
        table.add_column(column)
    for e in found:
        rows = sum(v for k, v in e.counts.items() if k != "profiles_in_cluster")
        table.add_row(
            e.id,
            e.state,
            e.requested_by,
            e.identifier_kind,
            f"{e.requested_at:%Y-%m-%d %H:%M}",
            str(rows),
        )
    console.print(table)


@privacy_app.command("resume")
def resume(
    force: bool = typer.Option(False, "--force", help="Also those whose lease has not expired."),
) -> None:
    """Run interrupted erasures again (the privacy job in `serve` and `worker` does this
    when their lease expires).

    Example: `closedloop privacy resume`
    """
    config = settings()
    with handle_errors():
        engine = open_store(config)
        upgrade_store(engine)
        done = privacy.resume_erasures(engine, config, force=force)
    console.print(f"{done} erasures completed")


@privacy_app.command("export")
def export(
    email: str | None = _EMAIL,
    phone: str | None = _PHONE,
    user_id: str | None = _USER,
    anonymous_id: str | None = _ANON,
    customer_key: str | None = _KEY,
    profile_id: str | None = _PROFILE,
    by: str | None = typer.Option(None, "--by", help="Who asked (a ticket, not a name)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file."),
) -> None:
    """Everything held about a person as JSON (GDPR Art. 15 and 20).

    Example: `closedloop privacy export --email anna@example.com -o anna.json`
    """
    kind, value = _one(email, phone, user_id, anonymous_id, customer_key, profile_id)
    config = settings()
    with handle_errors():
        document = privacy.export_subject(
            open_store(config), config, kind=kind, value=value, requested_by=_actor(by)
        )
    text = json.dumps(document, ensure_ascii=False, indent=2)
    if output is None:
        console.print(text)
        return
    output.write_text(text + "\n", encoding="utf-8")
    output.chmod(0o600)
    rows = sum(len(v) for v in document["tables"].values())
    console.print(f"wrote {output}: {rows} rows from {len(document['tables'])} tables")


@privacy_app.command("retention")
def retention() -> None:
    """Delete what is older than its retention setting now (the privacy job does it daily).

    Example: `CLOSEDLOOP_PRIVACY__FAILED_EVENTS_DAYS=7 closedloop privacy retention`
    """
    config = settings()
    with handle_errors():
        engine = open_store(config)
        upgrade_store(engine)
        counts = privacy.apply_retention(engine, config, actor=_actor(None))
    console.print(", ".join(f"{k}: {v} deleted" for k, v in counts.items()))


@privacy_app.command("rotate-key")
def rotate_key() -> None:
    """Re-key every profile whose customer key has an older version (after setting a new
    `IDENTITY__CUSTOMER_KEY_SECRET` and a higher `IDENTITY__CUSTOMER_KEY_VERSION`).

    Example: `CLOSEDLOOP_IDENTITY__CUSTOMER_KEY_VERSION=2 closedloop privacy rotate-key`
    """
    config = settings()
    with handle_errors():
        engine = open_store(config)
        upgrade_store(engine)
        changed = privacy.rotate_customer_keys(engine, config, requested_by=_actor(None))
    version = config.identity.customer_key_version
    console.print(f"{changed} profiles re-keyed to v{version}")


@privacy_app.command("audit")
def audit(
    limit: int = typer.Option(50, min=1, max=1000, help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The privacy audit log: erasures, exports, retention runs, key rotations.

    Example: `closedloop privacy audit --limit 20`
    """
    config = settings()
    with handle_errors():
        found = privacy.list_audit(open_store(config), limit=limit)
    if as_json:
        console.print(json.dumps([e.as_json() for e in found]))
        return
    table = Table()
    for column in ("at", "actor", "action", "subject", "details"):
        table.add_column(column)
    for e in found:
        table.add_row(
            f"{e.at:%Y-%m-%d %H:%M:%S}", e.actor, e.action, e.subject or "", json.dumps(e.details)
        )
    console.print(table)
