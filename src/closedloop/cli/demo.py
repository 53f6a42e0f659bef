"""`closedloop demo`: send the demo shop to a running hub."""

from __future__ import annotations

import httpx
import typer

from closedloop import clock
from closedloop.cli._app import app, console, fail, settings
from closedloop.demo import send_demo


@app.command("demo")
def demo(
    url: str = typer.Option("http://127.0.0.1:8000", help="The running hub."),
    write_key: str | None = typer.Option(
        None, help="A source's write key (default: CLOSEDLOOP_DEMO_WRITE_KEY from `init`)."
    ),
    customers: int = typer.Option(2000, min=1, help="How many customers."),
    days: int = typer.Option(90, min=1, help="Over how many days before now."),
    seed: int = typer.Option(7, help="Same seed, same shop (and no duplicates when resent)."),
) -> None:
    """Send a synthetic shop through the real tracking API.

    Example: `closedloop demo --customers 500`
    """
    config = settings()
    key = write_key or (config.demo_write_key.get_secret_value() if config.demo_write_key else None)
    if not key:
        raise fail("no write key: pass --write-key or run `closedloop init`")
    try:
        report = send_demo(url, key, customers=customers, days=days, seed=seed, now=clock.now())
    except (httpx.HTTPError, RuntimeError) as exc:
        raise fail(f"demo not sent to {url}: {exc}") from exc
    console.print(
        f"sent {report.events} events of {report.customers} customers in "
        f"{report.accepted_requests} requests ({report.failed_events} rejected)",
    )
