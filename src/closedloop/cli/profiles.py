"""`closedloop profiles`: look a customer up by any identifier."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from closedloop import clock, mood
from closedloop.cli._app import (
    app,
    console,
    fail,
    handle_errors,
    one_identifier,
    open_store,
    settings,
)
from closedloop.profiles import read
from closedloop.profiles.masterdata import full_name

profiles_app = typer.Typer(
    help="Look customers up.\n\nExample: `closedloop profiles show --phone '0351 1234567'`",
    no_args_is_help=True,
)
app.add_typer(profiles_app, name="profiles")


def _summary(doc: dict[str, Any]) -> Table:
    md = doc["masterdata"]
    computed = doc["computed"]
    table = Table(show_header=False, box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    name = full_name(md) or "-"
    rows = [
        ("profile", doc["id"]),
        (
            "mood",
            f"{doc['mood']['label']} ({doc['mood']['score']:+.2f})"
            + (", churn risk" if doc["mood"]["churn_risk"] else "")
            + "".join(
                f"; {r['label']} {r['at'][:10]} ({r['contribution']:+.2f})"
                for r in doc["mood"]["reasons"]
            ),
        ),
        ("customer key", doc["customer_key"] or "-"),
        ("name", name),
        ("salutation", md.get("salutation_de") or "-"),
        ("e-mail", md.get("email") or "-"),
        ("phone", md.get("phone") or "-"),
        (
            "address",
            ", ".join(
                p
                for p in (
                    md.get("street"),
                    " ".join(x for x in (md.get("postal_code"), md.get("city")) if x),
                )
                if p
            )
            or "-",
        ),
        (
            "identities",
            ", ".join(f"{i['kind']}={i['value']}" for i in doc["identities"]),
        ),
        (
            "seen",
            f"{computed['first_seen'] or '-'} .. {computed['last_seen'] or '-'} "
            f"({computed['events']} events on {', '.join(computed['channels']) or '-'})",
        ),
        ("orders", f"{computed['orders']} ({computed['revenue']:.2f})"),
        (
            "interests",
            ", ".join(f"{i['category']} ({i['count']})" for i in computed["interests"]) or "-",
        ),
        (
            "consent",
            ", ".join(
                f"{purpose}={'yes' if s['granted'] else 'no'}" if s else f"{purpose}=?"
                for purpose, s in doc["consent"].items()
            ),
        ),
        (
            "quality",
            "; ".join(f"{q['field']}: {q['problem']} ({q['value']})" for q in doc["quality"])
            or "ok",
        ),
        ("merged from", ", ".join(m["id"] for m in doc["merged_from"]) or "-"),
        (
            "conflicts",
            "; ".join(
                f"{c['reason']} with {c['other_profile_id'] or '-'} via "
                f"{c['identity']['kind']} ({c['occurrences']}x)"
                for c in doc["conflicts"]
            )
            or "-",
        ),
    ]
    for label, value in rows:
        table.add_row(label, value)
    return table


@profiles_app.command("show")
def show(
    email: str | None = typer.Option(None, help="E-mail address, any spelling."),
    phone: str | None = typer.Option(None, help="Phone number, any format."),
    user_id: str | None = typer.Option(None, "--user-id", help="The shop's user id."),
    anonymous_id: str | None = typer.Option(None, "--anonymous-id", help="A device's id."),
    customer_key: str | None = typer.Option(None, "--customer-key", help="`v1.` + hex."),
    profile_id: str | None = typer.Option(None, "--id", help="Profile id (merged ids too)."),
    events: int = typer.Option(10, min=0, max=1000, help="Newest timeline events to show."),
    as_json: bool = typer.Option(False, "--json", help="Print the profile (and events) as JSON."),
) -> None:
    """Show one customer's profile and newest events.

    Example: `closedloop profiles show --email anna@example.com --events 20`
    """
    config = settings()
    kind, value = one_identifier(
        {
            "email": email,
            "phone": phone,
            "user_id": user_id,
            "anonymous_id": anonymous_id,
            "customer_key": customer_key,
            "id": profile_id,
        }
    )
    purposes = config.profiles.consent_purposes
    with handle_errors():
        engine = open_store(config)
        if kind == "id":
            profile: read.Profile | None = read.get_profile(engine, value, purposes=purposes)
        else:
            profile = read.find_profile(
                engine, kind, value, region=config.identity.default_region, purposes=purposes
            )
        if profile is None:
            raise fail(f"no profile with {kind.replace('_', ' ')} `{value[:80]}`")
        _found, timeline = read.timeline(engine, profile.id, before_id=None, limit=max(events, 1))
        timeline = timeline[:events]
        rules = mood.current_rules(engine)
    now = clock.now()
    doc = dict(profile.as_json())
    doc["mood"] = mood.describe(profile.derived or {}, config.mood, now=now, rules=rules).as_json()
    if as_json:
        doc["events"] = [
            {
                "id": e.id,
                "source": e.source,
                "type": e.type,
                "event": e.event,
                "timestamp": e.timestamp.isoformat(),
                "properties": e.payload.get("properties"),
            }
            for e in timeline
        ]
        console.print(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    console.print(_summary(doc))
    if timeline:
        table = Table(title="newest events")
        for column in ("time", "source", "type", "event / page"):
            table.add_column(column)
        for e in timeline:
            props = e.payload.get("properties") or {}
            what = e.event or e.payload.get("name") or props.get("path") or ""
            table.add_row(e.timestamp.isoformat(timespec="seconds"), e.source, e.type, str(what))
        console.print(table)


@profiles_app.command("conflicts")
def conflicts(
    reason: str | None = typer.Option(
        None, help="`different_user_ids` (shared devices, family accounts) or `anonymous_id_limit`."
    ),
    settled: bool | None = typer.Option(
        None,
        "--settled/--open",
        help="Only those an alias joined since, or only the open ones (default: all).",
    ),
    sort: str = typer.Option(
        "newest",
        help="`newest` (first recorded), `occurrences` (most first) or `last_seen`.",
    ),
    limit: int = typer.Option(50, min=1, max=500, help="Refusals to show."),
    as_json: bool = typer.Option(False, "--json", help="Print them as JSON."),
) -> None:
    """Show the joins the identity rules refused, newest first: the shared devices and
    kiosks to look at. Each side is the profile that holds it now; `settled` where an alias
    joined the two later.

    Example: `closedloop profiles conflicts --open --sort occurrences`
    """
    config = settings()
    with handle_errors():
        found = read.list_conflicts(
            open_store(config), reason=reason, settled=settled, sort=sort, limit=limit
        )
    if as_json:
        console.print(json.dumps(found, ensure_ascii=False, indent=2))
        return
    if not found:
        console.print("no refused joins")
        return
    for c in found:  # a line each: ids are long, and lines are what grep and less take
        console.print(
            f"{c['reason']}  {c['profile_id']} / {c['other_profile_id'] or '-'}  via "
            f"{c['identity']['kind']}={c['identity']['value']}  {c['occurrences']}x  events "
            f"{c['first_event_id']}..{c['last_event_id']}" + ("  settled" if c["settled"] else "")
        )


@profiles_app.command("quality")
def quality(
    field: str | None = typer.Option(
        None,
        help="List the profiles with a problem in this field (the trait's name, "
        "`address.postalCode`), or with any (`any`), instead of the summary.",
    ),
    examples: int = typer.Option(3, min=0, max=20, help="Profiles shown per problem."),
    limit: int = typer.Option(50, min=1, max=500, help="Profiles to list with `--field`."),
    as_json: bool = typer.Option(False, "--json", help="Print it as JSON."),
) -> None:
    """Show the master-data problems of all customers, per field and problem, most first:
    what the CRM would receive unclean. With `--field`, the customers to fix, a line each.

    Example: `closedloop profiles quality --field address.postalCode`
    """
    config = settings()
    engine = open_store(config)
    if field is None:
        with handle_errors():
            report = read.quality_report(engine, examples=examples)
        if as_json:
            console.print(json.dumps(report, ensure_ascii=False, indent=2))
            return
        console.print(
            f"{report['profiles']} profiles, {report['with_problems']} with problems",
        )
        for g in report["problems"]:
            shown = ", ".join(f"{e['profile_id']} ({e['value']})" for e in g["examples"])
            console.print(
                f"{g['profiles']:>8}  {g['field']}: {g['problem']}"
                + (f"  e.g. {shown}" if shown else ""),
            )
        return
    with handle_errors():
        found = read.list_profiles(
            engine,
            after=None,
            limit=limit,
            purposes=config.profiles.consent_purposes,
            quality=field,
        )
    listed = [
        {
            "profile_id": p.id,
            "problems": [
                q for q in p.document["quality"] if field == read.ANY_PROBLEM or q["field"] == field
            ],
        }
        for p in found
    ]
    if as_json:
        console.print(json.dumps(listed, ensure_ascii=False, indent=2))
        return
    if not listed:
        console.print("no profiles with such problems")
    for item in listed:
        problems = "; ".join(f"{q['field']}={q['value']}: {q['problem']}" for q in item["problems"])
        console.print(f"{item['profile_id']}  {problems}")
