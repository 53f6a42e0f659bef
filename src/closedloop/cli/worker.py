"""`closedloop worker` and `closedloop rebuild`: the processor outside the server."""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

import typer

from closedloop import clock, feeds, mood, privacy, profiles, segments, store, surveys
from closedloop.cli._app import app, console, handle_errors, open_store, settings, upgrade_store


@app.command("worker")
def worker(
    once: bool = typer.Option(False, "--once", help="Process what is there, then exit."),
    batch_events: int | None = typer.Option(
        None, min=1, max=100_000, help="Events per transaction (default: setting)."
    ),
) -> None:
    """Run the processor: derive identities and profiles from the event log, keep segment
    membership current, run the feeds when their schedules are due (and runs queued
    through the API), send due surveys, resume interrupted erasures and, daily, apply
    retention.

    Safe to run several on PostgreSQL (they take turns batch by batch; a feed runs in one
    worker at a time) and next to `closedloop serve`. Stops cleanly on Ctrl-C or SIGTERM
    after the current batch.

    Example: `CLOSEDLOOP_PROCESSOR__EMBEDDED=false closedloop serve & closedloop worker`
    """
    config = settings()
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with handle_errors():
        engine = open_store(config, background_checkpoints=True)
        upgrade_store(engine)
        total = 0
        started = time.monotonic()
        last_refresh = 0.0
        last_feeds = float("-inf")
        last_surveys = float("-inf")
        last_privacy = float("-inf")
        if not once:  # big feeds' worker processes started ahead of their runs
            feeds.keep_workers_ready(engine, config)
        while not stop.is_set():
            if once:  # every event taken so far, waiting a while for older transactions
                done = profiles.process_through(engine, config, limit=batch_events)
            else:
                done = profiles.process_available(engine, config, limit=batch_events, stop=stop)
            total += done
            due = time.monotonic() - last_refresh >= config.segments.refresh_seconds
            if due or once:
                mood.ensure_basis(engine, config)
                segments.ensure_trait_indexes(engine, config)
                segments.refresh(engine, config)
                segments.record_moods(engine, config, clock.now())
                last_refresh = time.monotonic()
            elif done:
                segments.refresh(engine, config, incremental=True)
            if once or time.monotonic() - last_feeds >= config.feeds.poll_seconds:
                feeds.schedule_due(engine)
                for run in feeds.execute_due(engine, config, stop=stop):
                    console.print(
                        f"worker: feed `{run.feed}` run {run.id} {run.state}"
                        + (f": {run.error}" if run.error else f", {run.rows} rows"),
                    )
                last_feeds = time.monotonic()
            if once or time.monotonic() - last_surveys >= config.surveys.poll_seconds:
                invited = surveys.evaluate(engine, config)
                mailed = surveys.send_due(engine, config)
                if invited or mailed:
                    console.print(
                        f"worker: surveys: {invited} invitations queued, {mailed} mailed",
                    )
                last_surveys = time.monotonic()
            if once or time.monotonic() - last_privacy >= config.privacy.poll_seconds:
                privacy.run_privacy_once(engine, config)
                last_privacy = time.monotonic()
            if done:
                rate = total / max(time.monotonic() - started, 1e-9)
                console.print(f"worker: {total} events processed ({rate:.0f}/s)")
            if once:
                break
            stop.wait(config.processor.poll_seconds)
        feeds.stop_ready_workers()
    console.print(f"worker: stopped after {total} events")


@app.command("rebuild")
def rebuild(
    batch_events: int | None = typer.Option(
        None, min=1, max=100_000, help="Events per transaction (default: setting)."
    ),
) -> None:
    """Forget all derived identities and profiles and rebuild them from the event log.

    The result equals what incremental processing made (the log is the truth).

    Example: `closedloop rebuild`
    """
    config = settings()
    with handle_errors():
        engine = open_store(config)
        store.upgrade(engine)  # (its notes would name what this rebuild does now)
        started = time.monotonic()
        done = profiles.rebuild(engine, config, limit=batch_events)
        seconds = time.monotonic() - started
        lag = profiles.lag(engine)
    console.print(f"rebuild: {done} events processed in {seconds:.1f} s; {lag.events} left")
    if lag.held:
        console.print(
            f"rebuild: {lag.held} of them wait for an older transaction that is still open; "
            "the processor (`closedloop serve` or `closedloop worker`) applies them once it ends"
        )
        if lag.holder is not None:
            named = " · ".join(lag.holder.parts) or "a session hidden from the store's user"
            since = f", open for {lag.held_seconds:.0f} s" if lag.holder.since else ""
            console.print(f"rebuild: held by {named}{since}")
