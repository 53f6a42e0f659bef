"""`closedloop tokens`: admin tokens for tools and colleagues, kept hashed."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from closedloop import access
from closedloop.cli._app import app, console, handle_errors, open_store, settings, upgrade_store

tokens_app = typer.Typer(
    help="Admin tokens, kept hashed.\n\nExample: `closedloop tokens add crm-sync`",
    no_args_is_help=True,
)
app.add_typer(tokens_app, name="tokens")


@tokens_app.command("add")
def add(
    name: str = typer.Argument(..., help="What the token is for: `crm-sync`, `anna`."),
    as_json: bool = typer.Option(False, "--json", help='Print `{"name", "token"}`.'),
) -> None:
    """Make an admin token and print it once (only its hash is stored); send it as
    `Authorization: Bearer <token>`.

    Example: `closedloop tokens add crm-sync`
    """
    config = settings()
    with handle_errors():
        engine = open_store(config)
        upgrade_store(engine)
        token = access.add_token(engine, name)
    if as_json:
        console.print(json.dumps({"name": name, "token": token}))
        return
    console.print(f"admin token `{name}` (shown once, keep it safe):\n{token}")


@tokens_app.command("list")
def list_tokens(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The admin tokens: name, first characters, made, last used.

    Example: `closedloop tokens list`
    """
    config = settings()
    with handle_errors():
        engine = open_store(config)
        upgrade_store(engine)
        found = access.list_tokens(engine)
    if as_json:
        console.print(json.dumps([t.as_json() for t in found]))
        return
    table = Table()
    for column in ("name", "hint", "created", "last used"):
        table.add_column(column)
    for t in found:
        used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "-"
        table.add_row(t.name, t.hint + "...", f"{t.created_at:%Y-%m-%d %H:%M}", used)
    console.print(table)


@tokens_app.command("revoke")
def revoke(name: str = typer.Argument(..., help="The token's name.")) -> None:
    """Revoke an admin token (servers stop accepting it within 5 seconds).

    Example: `closedloop tokens revoke crm-sync`
    """
    config = settings()
    with handle_errors():
        access.revoke_token(open_store(config), name)
    console.print(f"token `{name}` revoked")
