"""`closedloop sources`: touchpoints and their write keys."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from closedloop import ingest
from closedloop.cli._app import app, console, handle_errors, open_store, settings

sources_app = typer.Typer(
    help="Sources (touchpoints) and their write keys.\n\n"
    "Example: `closedloop sources add shop-web --kind web`",
    no_args_is_help=True,
)
app.add_typer(sources_app, name="sources")


@sources_app.command("add")
def add(
    name: str = typer.Argument(..., help="Unique name, e.g. `shop-web`."),
    kind: str = typer.Option(..., help="web, app, server, pos, email or callcenter."),
    as_json: bool = typer.Option(False, "--json", help="Print `{name, kind, write_key}`."),
) -> None:
    """Add a source and print its write key (shown only this once).

    Example: `closedloop sources add shop-web --kind web --json`
    """
    config = settings()
    with handle_errors():
        made = ingest.add_source(open_store(config), name, kind=kind)
    _print_key(made, as_json=as_json)


def _print_key(made: ingest.NewSourceKey, *, as_json: bool) -> None:
    if as_json:
        data = {"name": made.source.name, "kind": made.source.kind, "write_key": made.write_key}
        console.print(json.dumps(data))
    else:
        console.print(f"source `{made.source.name}` ({made.source.kind})")
        console.print(f"write key: {made.write_key}")
        console.print("Keep it now: only its hash is stored.")


@sources_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List sources (never their keys, only a hint).

    Example: `closedloop sources list`
    """
    config = settings()
    with handle_errors():
        found = ingest.list_sources(open_store(config))
    if as_json:
        rows = [
            {
                "name": s.name,
                "kind": s.kind,
                "key_hint": s.key_hint,
                "enabled": s.enabled,
                "created_at": s.created_at.isoformat(),
            }
            for s in found
        ]
        console.print(json.dumps(rows))
        return
    table = Table("name", "kind", "key", "enabled", "created")
    for s in found:
        table.add_row(
            s.name,
            s.kind,
            s.key_hint + "...",
            "yes" if s.enabled else "no",
            s.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)


@sources_app.command("disable")
def disable(name: str = typer.Argument(..., help="The source's name.")) -> None:
    """Disable a source: its key gets 401 (within the key cache time).

    Example: `closedloop sources disable shop-web`
    """
    config = settings()
    with handle_errors():
        ingest.set_source_enabled(open_store(config), name, enabled=False)
    console.print(f"source `{name}` disabled")


@sources_app.command("enable")
def enable(name: str = typer.Argument(..., help="The source's name.")) -> None:
    """Enable a disabled source again.

    Example: `closedloop sources enable shop-web`
    """
    config = settings()
    with handle_errors():
        ingest.set_source_enabled(open_store(config), name, enabled=True)
    console.print(f"source `{name}` enabled")


@sources_app.command("rotate")
def rotate(
    name: str = typer.Argument(..., help="The source's name."),
    as_json: bool = typer.Option(False, "--json", help="Print `{name, kind, write_key}`."),
) -> None:
    """Replace a source's write key and print the new one; the old one stops working.

    Example: `closedloop sources rotate shop-web`
    """
    config = settings()
    with handle_errors():
        made = ingest.rotate_write_key(open_store(config), name)
    _print_key(made, as_json=as_json)
