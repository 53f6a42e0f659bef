"""`closedloop users`: who may log in to the dashboard, with which role."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from closedloop.access import users as accounts
from closedloop.cli._app import app, console, handle_errors, open_store, settings, upgrade_store

users_app = typer.Typer(
    help="Dashboard users and roles (admin, marketer, agent, viewer).\n\n"
    "Example: `closedloop users add anna --role agent`",
    no_args_is_help=True,
)
app.add_typer(users_app, name="users")


@users_app.command("add")
def add(
    name: str = typer.Argument(..., help="Login name: lower-case letters, digits, `_ . @ -`."),
    role: str = typer.Option(..., help="admin, marketer, agent or viewer."),
    locale: str = typer.Option("de", help="Language of the dashboard: de or en."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from standard input (12+ chars)."
    ),
    as_json: bool = typer.Option(False, "--json", help='Print `{"name", "role", "password"}`.'),
) -> None:
    """Add a dashboard user; without `--password-stdin` a password is made and printed once.

    Example: `closedloop users add anna --role agent --locale de`
    """
    password = typer.get_text_stream("stdin").readline().rstrip("\n") if password_stdin else None
    config = settings()
    with handle_errors():
        engine = open_store(config)
        upgrade_store(engine)
        made = accounts.add_user(engine, name, role=role, locale=locale, password=password)
    if as_json:
        console.print(json.dumps({"name": name, "role": role, "password": made}))
    elif password is None:
        console.print(f"user `{name}` ({role}); password (shown once): {made}")
    else:
        console.print(f"user `{name}` ({role}) added")


@users_app.command("list")
def list_users(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The dashboard users with role, language and last login.

    Example: `closedloop users list`
    """
    config = settings()
    with handle_errors():
        engine = open_store(config)
        upgrade_store(engine)
        found = accounts.list_users(engine)
    if as_json:
        console.print(json.dumps([u.as_json() for u in found]))
        return
    table = Table()
    for column in ("name", "role", "locale", "last login"):
        table.add_column(column)
    for u in found:
        last = f"{u.last_login_at:%Y-%m-%d %H:%M}" if u.last_login_at else "-"
        table.add_row(u.name, u.role, u.locale, last)
    console.print(table)


@users_app.command("password")
def password(
    name: str = typer.Argument(..., help="The user."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read it from stdin."),
) -> None:
    """Set a new password (made and printed once unless read from stdin); her sessions end.

    Example: `closedloop users password anna`
    """
    given = typer.get_text_stream("stdin").readline().rstrip("\n") if password_stdin else None
    config = settings()
    with handle_errors():
        made = accounts.set_password(open_store(config), name, given)
    console.print(f"new password for `{name}`" + ("" if given else f" (shown once): {made}"))


@users_app.command("remove")
def remove(name: str = typer.Argument(..., help="The user.")) -> None:
    """Remove a dashboard user and end her sessions.

    Example: `closedloop users remove anna`
    """
    config = settings()
    with handle_errors():
        accounts.remove_user(open_store(config), name)
    console.print(f"user `{name}` removed")
