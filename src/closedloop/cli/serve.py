"""`closedloop serve`: the hub's HTTP server."""

from __future__ import annotations

import gc
import sys
import threading
import time

import httpx
import typer
import uvicorn

from closedloop import clock
from closedloop.cli._app import (
    app,
    console,
    err_console,
    handle_errors,
    open_store,
    settings,
    upgrade_store,
)
from closedloop.config import Settings
from closedloop.demo import send_demo
from closedloop.demo.surveys import run_demo_survey
from closedloop.errors import ClosedloopError
from closedloop.store import create_store_engine
from closedloop.web import create_app


def _load_demo_when_up(url: str, write_key: str, customers: int, config: Settings) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    try:
        report = send_demo(url, write_key, customers=customers, now=clock.now())
    except (httpx.HTTPError, RuntimeError) as exc:
        err_console.print(f"demo: not loaded: {exc}")
        return
    console.print(
        f"demo: sent {report.events} events of {report.customers} customers "
        f"through {url}/v1/batch ({report.failed_events} rejected)",
    )
    engine = create_store_engine(config.database_url)
    try:
        found = run_demo_survey(url, engine, config)
    except (httpx.HTTPError, ClosedloopError) as exc:
        err_console.print(f"demo: survey not run: {exc}")
        return
    finally:
        engine.dispose()
    console.print(
        f"demo: survey `nps-demo`: {found.mailed} invitations mailed to "
        f"{config.surveys.outbox_dir}/, {found.answered} answered on the survey pages, "
        f"NPS {found.nps}; see `closedloop surveys stats nps-demo`",
    )


@app.command("serve")
def serve(
    host: str | None = typer.Option(None, help="Listen address (default: CLOSEDLOOP_HOST)."),
    port: int | None = typer.Option(None, help="Port (default: CLOSEDLOOP_PORT)."),
    demo: bool = typer.Option(False, help="Once up, send the demo shop through the API."),
    demo_customers: int = typer.Option(2000, min=1, help="Customers in the demo shop."),
    access_log: bool = typer.Option(False, help="Log every request."),
) -> None:
    """Migrate the store and serve the hub.

    Example: `closedloop serve --port 8000`
    """
    config = settings()
    with handle_errors():
        engine = open_store(config)
        upgrade_store(engine)
        engine.dispose()
    bind_host = host or config.host
    bind_port = port if port is not None else config.port
    if demo:
        if config.demo_write_key is None:
            err_console.print("demo: no demo write key: run `closedloop init` first")
        else:
            url = (
                f"http://{'127.0.0.1' if bind_host in ('0.0.0.0', '::') else bind_host}:{bind_port}"  # noqa: S104 # nosec B104
            )
            threading.Thread(
                target=_load_demo_when_up,
                args=(url, config.demo_write_key.get_secret_value(), demo_customers, config),
                daemon=True,
            ).start()
    # The group-commit writer thread hands the GIL back and forth with the event loop on
    # every statement; the default 5 ms switch interval turns each hand-over into a wait
    # (A/B runs of bench/ingest_bench.py: +10 to 20 % batch throughput at 0.5 ms, noisy).
    sys.setswitchinterval(0.0005)
    console.print(f"closedloop serving on http://{bind_host}:{bind_port}")
    app = create_app(config)
    # Everything loaded so far lives as long as the process: keep it out of the cyclic
    # collector, whose full passes otherwise walk ~115,000 objects (measured 86 ms a pass
    # under the batch benchmark, about 8 ms after the freeze): fewer and shorter pauses.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=bind_host,
        port=bind_port,
        log_level=config.log_level,
        access_log=access_log,
        timeout_graceful_shutdown=10,
    )
