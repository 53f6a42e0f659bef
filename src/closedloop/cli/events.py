"""`closedloop events`: look into the event log."""

from __future__ import annotations

import json
import time

import typer

from closedloop import ingest
from closedloop.cli._app import app, console, handle_errors, open_store, settings

events_app = typer.Typer(
    help="Look into the event log.\n\nExample: `closedloop events tail --follow`",
    no_args_is_help=True,
)
app.add_typer(events_app, name="events")


@events_app.command("tail")
def tail(
    lines: int = typer.Option(10, "-n", "--lines", min=1, max=1000, help="How many to show first."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events."),
    source: str | None = typer.Option(None, help="Only this source."),
    interval: float = typer.Option(1.0, min=0.1, help="Seconds between polls with --follow."),
) -> None:
    """Print the newest events as JSON lines (oldest first), optionally following new ones.

    Example: `closedloop events tail -n 20 --source shop-web`
    """
    config = settings()
    with handle_errors():
        engine = open_store(config)
        newest = ingest.list_events(engine, ingest.EventQuery(source=source, limit=lines))
        last_id = 0
        for event in reversed(newest):
            _print(event)
            last_id = event.id
        if not newest:
            latest = ingest.list_events(engine, ingest.EventQuery(source=source, limit=1))
            last_id = latest[0].id if latest else 0
        while follow:
            time.sleep(interval)
            fresh = ingest.list_events(
                engine,
                ingest.EventQuery(source=source, after_id=last_id, newest_first=False, limit=1000),
            )
            for event in fresh:
                _print(event)
                last_id = event.id


def _print(event: ingest.StoredEvent) -> None:
    console.print(
        json.dumps(
            {
                "id": event.id,
                "source": event.source,
                "type": event.type,
                "event": event.event,
                "userId": event.user_id,
                "anonymousId": event.anonymous_id,
                "timestamp": event.timestamp.isoformat(),
                "messageId": event.message_id,
                "properties": event.payload.get("properties"),
                "traits": event.payload.get("traits"),
            },
            ensure_ascii=False,
        ),
    )
