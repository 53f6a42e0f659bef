"""`closedloop feeds`: CRM feeds, their previews, runs and run log."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from closedloop import feeds
from closedloop.cli._app import (
    app,
    console,
    fail,
    handle_errors,
    open_store,
    settings,
    upgrade_store,
)

feeds_app = typer.Typer(
    help="CRM feeds: scheduled exports of customers (CSV or JSONL to a folder, FTPS, SFTP or "
    "a webhook).\n\nExample: `closedloop feeds run crm-masterdata`",
    no_args_is_help=True,
)
app.add_typer(feeds_app, name="feeds")


@feeds_app.command("list")
def list_feeds() -> None:
    """The feeds with their schedule, destination and last run.

    Example: `closedloop feeds list`
    """
    config = settings()
    table = Table()
    for column in ("feed", "mode", "schedule", "destination", "next run", "last run"):
        table.add_column(column)
    with handle_errors():
        engine = open_store(config)
        upgrade_store(engine)
        for found in feeds.list_feeds(engine):
            d = found.definition
            schedule = f"{d.schedule.cron} {d.schedule.timezone}" if d.schedule else "by hand"
            last = found.last_run
            last_text = f"{last['state']} ({last['rows']} rows)" if last else "-"
            table.add_row(
                d.name,
                d.mode,
                schedule,
                d.destination.type,
                found.next_run_at.isoformat(timespec="minutes") if found.next_run_at else "-",
                last_text,
            )
    console.print(table)


@feeds_app.command("show")
def show(name: str = typer.Argument(..., help="The feed's name.")) -> None:
    """A feed's definition as JSON (the form `closedloop apply` and `/v1/feeds` take).

    Example: `closedloop feeds show mood-keys`
    """
    config = settings()
    with handle_errors():
        found = feeds.get_feed(open_store(config), name)
    console.print(json.dumps(found.as_json(), indent=2, ensure_ascii=False))


@feeds_app.command("preview")
def preview(
    name: str = typer.Argument(..., help="The feed's name."),
    rows: int = typer.Option(10, min=1, max=100, help="How many rows to show."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The first rows as a run would write them (nothing is stored or sent).

    Example: `closedloop feeds preview crm-masterdata --rows 5`
    """
    config = settings()
    with handle_errors():
        found = feeds.preview(open_store(config), config, name, rows=rows)
    if as_json:
        document = {"columns": found.columns, "rows": found.rows, "stats": found.stats}
        console.print(json.dumps(document, ensure_ascii=False))
        return
    table = Table()
    for column in found.columns:  # long values are cut here; --json shows them whole
        table.add_column(column, overflow="ellipsis", no_wrap=True, max_width=30)
    for row in found.rows:
        table.add_row(*row)
    console.print(table)
    stats = found.stats
    console.print(
        f"{len(found.rows)} rows shown; of the {stats['selected']} customers read for them "
        f"{stats['skipped_no_consent']} lack consent and {stats['skipped_no_key']} a key",
    )


@feeds_app.command("run")
def run(
    name: str = typer.Argument(..., help="The feed's name."),
    as_json: bool = typer.Option(False, "--json", help="Print the run as JSON."),
) -> None:
    """Run a feed now, in this process, and print the run (exit 1 if it failed).

    Example: `closedloop feeds run mood-keys`
    """
    config = settings()
    with handle_errors():
        engine = open_store(config)
        upgrade_store(engine)
        done = feeds.run_now(engine, config, name)
    if as_json:
        console.print(json.dumps(done.as_json(), ensure_ascii=False))
    else:
        _print_run(done)
    if done.state != "succeeded":
        raise typer.Exit(1)


def _print_run(done: feeds.FeedRun) -> None:
    if done.state == "succeeded":
        where = (done.stats or {}).get("destination", "")
        console.print(
            f"run {done.id} of `{done.feed}`: {done.rows} rows, {done.bytes} bytes, "
            f"sha256 {done.checksum}, {done.duration_seconds} s -> {where}",
        )
    else:
        console.print(f"run {done.id} of `{done.feed}` {done.state}: {done.error}")


@feeds_app.command("runs")
def runs(
    name: str = typer.Argument(..., help="The feed's name."),
    limit: int = typer.Option(20, min=1, max=500, help="How many runs to show."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Every run of a feed, newest first: state, rows, bytes, checksum, duration, error.

    Example: `closedloop feeds runs crm-masterdata`
    """
    config = settings()
    with handle_errors():
        found = feeds.list_runs(open_store(config), name, limit=limit)
    if as_json:
        items = [r.as_json() for r in found]
        console.print(json.dumps({"items": items}, ensure_ascii=False))
        return
    table = Table()
    for column in (
        "run",
        "trigger",
        "state",
        "started",
        "rows",
        "bytes",
        "seconds",
        "file",
        "error",
    ):
        table.add_column(column, overflow="fold")
    for r in found:
        table.add_row(
            r.id,
            r.trigger,
            r.state,
            r.started_at.isoformat(timespec="seconds") if r.started_at else "-",
            "-" if r.rows is None else str(r.rows),
            "-" if r.bytes is None else str(r.bytes),
            "-" if r.duration_seconds is None else str(r.duration_seconds),
            r.file_name or "-",
            r.error or "",
        )
    console.print(table)


@feeds_app.command("delete")
def delete(
    name: str = typer.Argument(..., help="The feed's name."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask."),
) -> None:
    """Delete a feed with its run log.

    Example: `closedloop feeds delete old-export --yes`
    """
    config = settings()
    if not yes:
        raise fail(f"deleting feed `{name}` removes its run log: add --yes")
    with handle_errors():
        feeds.delete_feed(open_store(config), name)
    console.print(f"feed `{name}` deleted")
