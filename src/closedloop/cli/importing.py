"""`closedloop import`: load JSONL or CSV files into the event log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import typer

from closedloop import ingest
from closedloop.cli._app import app, console, fail, handle_errors, open_store, settings
from closedloop.ingest.importer import import_file, load_mapping


@app.command("import")
def import_(
    file: Path = typer.Argument(..., help="A .jsonl file of Segment messages or a .csv file."),
    source: str = typer.Option(..., help="The source the events come from."),
    fmt: str | None = typer.Option(
        None, "--format", help="jsonl or csv (default: from the file's ending)."
    ),
    mapping: Path | None = typer.Option(
        None, help="CSV column mapping, YAML or JSON (see docs/import.md)."
    ),
    show: int = typer.Option(20, help="How many rejected lines to print."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Import a file with the same validation and dedupe as the tracking API.

    Importing the same file again stores nothing twice. Examples:

    `closedloop import events.jsonl --source shop-server`

    `closedloop import pos.csv --source pos --mapping pos-mapping.yaml`
    """
    config = settings()
    chosen = fmt or ("csv" if file.suffix.lower() == ".csv" else "jsonl")
    if chosen not in ("jsonl", "csv"):
        raise fail(f"invalid --format `{chosen}`: use jsonl or csv")
    kind: Literal["jsonl", "csv"] = "csv" if chosen == "csv" else "jsonl"
    with handle_errors():
        engine = open_store(config)
        found = ingest.get_source(engine, source)
        spec = load_mapping(mapping) if mapping else None
        report = import_file(
            engine, file, source=found, limits=config.ingest, fmt=kind, mapping=spec
        )
    if as_json:
        console.print(
            json.dumps(
                {
                    "accepted": report.accepted,
                    "duplicates": report.duplicates,
                    "rejected": report.rejected,
                    "rejections": [
                        {"line": r.line, "field": r.field, "reason": r.reason}
                        for r in report.rejections
                    ],
                },
                ensure_ascii=False,
            ),
        )
    else:
        console.print(
            f"{report.accepted} accepted, {report.duplicates} already stored, "
            f"{report.rejected} rejected",
        )
        for rejection in report.rejections[:show]:
            where = f" `{rejection.field}`" if rejection.field else ""
            console.print(f"  line {rejection.line}{where}: {rejection.reason}")
        if report.rejected > show:
            console.print(f"  ... and {report.rejected - show} more (see /v1/failed-events)")
    if report.rejected and not report.accepted and not report.duplicates:
        raise typer.Exit(1)
