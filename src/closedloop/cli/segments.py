"""`closedloop segments`: shipped segments, their members, and previews of a condition."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from closedloop import clock, segments
from closedloop.cli._app import app, console, fail, handle_errors, open_store, settings

segments_app = typer.Typer(
    help="Segments.\n\nExample: `closedloop segments preview 'mood is negative or churn risk'`",
    no_args_is_help=True,
)
app.add_typer(segments_app, name="segments")


@segments_app.command("list")
def list_segments() -> None:
    """The segments with their conditions and sizes (members as of the last refresh).

    Example: `closedloop segments list`
    """
    config = settings()
    table = Table()
    for column in ("segment", "size", "condition", "refreshed"):
        table.add_column(column)
    with handle_errors():
        for found in segments.list_segments(open_store(config)):
            refreshed = (
                found.refreshed_at.isoformat(timespec="seconds") if found.refreshed_at else "-"
            )
            table.add_row(found.name, str(found.size), found.condition, refreshed)
    console.print(table)


@segments_app.command("refresh")
def refresh() -> None:
    """Evaluate every segment now and record who entered and who exited.

    The server does this itself after new events and every 15 minutes.

    Example: `closedloop segments refresh`
    """
    config = settings()
    with handle_errors():
        report = segments.refresh(open_store(config), config)
    console.print(
        f"{report.segments} segments: {report.entered} entered, {report.exited} exited",
    )


@segments_app.command("preview")
def preview(
    condition: str = typer.Argument(..., help="Condition text, or a JSON tree with --json-tree."),
    json_tree: bool = typer.Option(False, "--json-tree", help="CONDITION is a JSON tree."),
    sample: int = typer.Option(20, min=0, max=1000, help="How many members to show."),
) -> None:
    """Count the profiles a condition selects now and show some, without saving anything.

    Example: `closedloop segments preview 'latest nps >= 9 within 90 days'`
    """
    config = settings()
    given: object = condition
    if json_tree:
        try:
            given = json.loads(condition)
        except json.JSONDecodeError as exc:
            raise fail(f"--json-tree: not JSON: {exc}") from exc
    with handle_errors():
        found = segments.preview(open_store(config), config, given, now=clock.now(), sample=sample)
    console.print(f"{found.count} profiles: {found.text}")
    for member in found.sample:
        console.print(f"  {member['id']}  {member['customer_key'] or '-'}")


@segments_app.command("members")
def members(
    name: str = typer.Argument(..., help="A segment's name (`closedloop segments list`)."),
    limit: int = typer.Option(100, min=1, max=100_000, help="At most this many."),
) -> None:
    """Print a segment's members as JSON lines: profile id, customer key, since when.

    Example: `closedloop segments members promoters --limit 10`
    """
    config = settings()
    with handle_errors():
        found = segments.stored_members(open_store(config), name, after=None, limit=limit)
    for member in found:
        console.print(json.dumps(member))
