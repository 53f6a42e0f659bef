"""`closedloop surveys`: NPS surveys, their stats, and why someone was (not) surveyed."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from closedloop import surveys
from closedloop.cli._app import app, console, handle_errors, open_store, settings, upgrade_store

surveys_app = typer.Typer(
    help="NPS surveys.\n\nExample: `closedloop surveys stats nps`", no_args_is_help=True
)
app.add_typer(surveys_app, name="surveys")


@surveys_app.command("list")
def list_surveys() -> None:
    """The surveys with their timing rules.

    Example: `closedloop surveys list`
    """
    config = settings()
    table = Table()
    for column in ("survey", "trigger", "delay (days)", "interval (weeks)", "sample", "budget"):
        table.add_column(column)
    with handle_errors():
        engine = open_store(config)
        upgrade_store(engine)
        for s in surveys.list_surveys(engine):
            delay = f"{s.min_delay_days}-{s.max_delay_days or '∞'}"
            budget = str(s.monthly_budget) if s.monthly_budget else "-"
            table.add_row(
                s.name, s.trigger, delay, str(s.interval_weeks), f"{s.sample_percent:g} %", budget
            )
    console.print(table)


@surveys_app.command("stats")
def stats(
    name: str = typer.Argument(..., help="The survey's name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """NPS, the 0-10 distribution, sent, answered, response rate, by month, comments.

    Example: `closedloop surveys stats nps`
    """
    config = settings()
    with handle_errors():
        found = surveys.stats(open_store(config), name)
    if as_json:
        console.print(json.dumps(found, ensure_ascii=False))
        return
    nps = "-" if found["nps"] is None else f"{found['nps']:+d}"
    rate = found["response_rate"]
    console.print(
        f"{name}: NPS {nps} (n={found['n']}: {found['promoters']} promoters, "
        f"{found['passives']} passives, {found['detractors']} detractors); "
        f"{found['sent']} sent, {found['answered']} answered"
        + (f" ({rate:.0%})" if rate is not None else ""),
    )
    console.print(
        "distribution: " + ", ".join(f"{k}: {v}" for k, v in found["distribution"].items()),
    )
    for month in found["by_month"]:
        console.print(f"{month['month']}: NPS {month['nps']:+d} (n={month['n']})")
    for group in found["by_segment"]:
        console.print(f"segment {group['segment']}: NPS {group['nps']:+d} (n={group['n']})")
    for comment in found["comments"][:10]:
        console.print(f"[{comment['score']}] {comment['comment']}")


@surveys_app.command("eligibility")
def eligibility(
    name: str = typer.Argument(..., help="The survey's name."),
    profile: str = typer.Option(..., "--profile", help="A profile id."),
) -> None:
    """Why a customer was or was not surveyed: each decision with its reason.

    Example: `closedloop surveys eligibility nps --profile p_...`
    """
    config = settings()
    with handle_errors():
        found = surveys.eligibility(open_store(config), name, profile)
    console.print(json.dumps(found, ensure_ascii=False, indent=2))


@surveys_app.command("run")
def run() -> None:
    """Evaluate the identifies processed since the last pass and mail due invitations now
    (the server and `closedloop worker` do it every `SURVEYS__POLL_SECONDS`).

    Example: `closedloop surveys run`
    """
    config = settings()
    with handle_errors():
        engine = open_store(config)
        upgrade_store(engine)
        invited = surveys.evaluate(engine, config)
        mailed = surveys.send_due(engine, config)
    console.print(f"surveys: {invited} invitations queued, {mailed} mailed")
