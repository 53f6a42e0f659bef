"""`closedloop db`: the store's schema."""

from __future__ import annotations

import typer

from closedloop import store
from closedloop.cli._app import app, console, handle_errors, open_store, settings, upgrade_store

db_app = typer.Typer(
    help="The store's schema.\n\nExample: `closedloop db upgrade`", no_args_is_help=True
)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def upgrade() -> None:
    """Create or migrate the store to the newest schema.

    Example (PostgreSQL):
    `CLOSEDLOOP_DATABASE_URL=postgresql+psycopg://root@127.0.0.1/test closedloop db upgrade`
    """
    config = settings()
    with handle_errors():
        engine = open_store(config)
        upgrade_store(engine)
        console.print(f"store at revision {store.current_revision(engine)}")


@db_app.command("current")
def current() -> None:
    """Show the store's schema revision and the newest one.

    Example: `closedloop db current`
    """
    config = settings()
    with handle_errors():
        engine = open_store(config)
        console.print(f"current: {store.current_revision(engine)}  head: {store.head_revision()}")
