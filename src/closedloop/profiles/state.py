"""One profile's derived state and how an event changes it.

Traits: last write wins by event time, per trait (a late event never overwrites a newer
value); ties go to the later event in the log. Each trait keeps `[value, time, source]`.
Nested `address` and `company` objects are kept per field (`address.postalCode`), so an
update of the city does not drop the postal code. Consent: per purpose, the newest statement
wins, and every change is recorded. Computed traits count what the profile did.

Times are epoch microseconds (ints compare and serialise fastest); the API renders them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COLUMNS_CHANGED_BY_MERGE",
    "ConsentChange",
    "ProcessedEvent",
    "ProfileState",
    "apply_event",
    "merge_into",
    "trait_values",
]

_INTEREST_EVENTS = frozenset(
    {
        "Product Viewed",
        "Product Clicked",
        "Product Added",
        "Product Added to Wishlist",
        "Order Completed",
    }
)
_FLATTENED = ("address", "company")
_MAX_KEY = 128
_MAX_CATEGORIES = 200
_TRUE = {"true", "yes", "granted", "1", "opt-in", "optin"}
_FALSE = {"false", "no", "denied", "0", "opt-out", "optout", "withdrawn"}


@dataclass(slots=True)
class ProcessedEvent:
    """An event as the processor hands it over (times in epoch microseconds)."""

    id: int
    type: str
    name: str | None
    timestamp: int
    received_at: int
    payload: dict[str, Any]
    source: str
    channel: str


@dataclass(frozen=True, slots=True)
class ConsentChange:
    profile_id: str
    purpose: str
    granted: bool
    at: int
    source: str
    event_id: int


# A profile's stored columns besides the counts (`computed`, `updated_at`) and the master
# data: a merge may change each of them, on both profiles.
COLUMNS_CHANGED_BY_MERGE = (
    "merged_into",
    "user_ids",
    "anonymous_ids",
    "traits",
    "consent",
    "derived",
    "created_at",
)


@dataclass(slots=True)
class ProfileState:
    id: str
    created_at: int
    updated_at: int
    created_event_id: int
    user_ids: list[str] = field(default_factory=list)
    anonymous_ids: int = 0
    traits: dict[str, list[Any]] = field(default_factory=dict)
    computed: dict[str, Any] = field(default_factory=dict)
    consent: dict[str, list[Any]] = field(default_factory=dict)
    merged_into: str | None = None
    # The stored master data, its quality and customer key (recomputed by group on change).
    masterdata: dict[str, Any] = field(default_factory=dict)
    quality: list[dict[str, str]] = field(default_factory=list)
    customer_key: str | None = None
    # What other domains derive (mood signals, ...), by domain name: see `profiles.hooks`.
    derived: dict[str, Any] = field(default_factory=dict)
    # What changed in this batch (not stored): trait names, or None for "everything".
    changed: set[str] | None = field(default_factory=set)
    new: bool = False
    dirty: bool = False
    traits_changed: bool = False
    # Which stored columns besides the counts changed in this batch (names from
    # `COLUMNS_CHANGED_BY_MERGE`; none: only the counts): SQLite sets only these, leaving
    # the indexes of the others.
    columns: set[str] = field(default_factory=set)


def _interest_categories(properties: dict[str, Any]) -> list[str]:
    found: list[str] = []
    category = properties.get("category")
    if isinstance(category, str) and category.strip():
        found.append(category.strip()[:100])
    products = properties.get("products")
    if isinstance(products, list):
        for product in products[:100]:
            if isinstance(product, dict):
                value = product.get("category")
                if isinstance(value, str) and value.strip():
                    found.append(value.strip()[:100])
    return found


def _amount(properties: dict[str, Any]) -> float:
    for name in ("revenue", "total"):
        value = properties.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            amount = float(value)
            if math.isfinite(amount) and abs(amount) < 1e12:
                return amount
    return 0.0


def _consent_value(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return None


def _count_event(p: ProfileState, ev: ProcessedEvent) -> None:
    c = p.computed
    at = ev.timestamp
    if not c:
        c.update(
            first_seen=at,
            last_seen=at,
            events=0,
            by_type={},
            channels=[],
            orders=0,
            revenue=0.0,
            interests={},
        )
    c["events"] += 1
    if at < c["first_seen"]:
        c["first_seen"] = at
    if at > c["last_seen"]:
        c["last_seen"] = at
    by_type = c["by_type"]
    kind = ev.type
    by_type[kind] = by_type.get(kind, 0) + 1
    channels = c["channels"]
    if ev.channel not in channels:
        c["channels"] = sorted([*channels, ev.channel])
    if kind == "track" and ev.name in NPS_EVENTS:
        _take_nps(c, ev)
    if kind == "track" and ev.name in _INTEREST_EVENTS:
        properties = ev.payload.get("properties")
        if isinstance(properties, dict):
            if ev.name == "Order Completed":
                c["orders"] += 1
                c["revenue"] = round(c["revenue"] + _amount(properties), 4)
            interests = c["interests"]
            for category in _interest_categories(properties):
                if category in interests or len(interests) < _MAX_CATEGORIES:
                    interests[category] = interests.get(category, 0) + 1


# An NPS answer sent by the shop, one given on closedloop's own survey pages, and a change
# of that answer (the mood counts the first answer only).
NPS_EVENTS = frozenset(("NPS Answered", "NPS Survey Answered", "NPS Survey Answer Changed"))


def _take_nps(c: dict[str, Any], ev: ProcessedEvent) -> None:
    """The latest NPS answer (0-10) as `computed.nps = [score, at_us, event_id]`."""
    properties = ev.payload.get("properties")
    score = properties.get("score") if isinstance(properties, dict) else None
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 10:
        return
    current = c.get("nps")
    if current is None or (ev.timestamp, ev.id) >= (current[1], current[2]):
        c["nps"] = [score, ev.timestamp, ev.id]


def _set_trait(p: ProfileState, name: str, value: Any, at: int, source: str, limit: int) -> None:
    if not name or len(name) > _MAX_KEY:
        return
    current = p.traits.get(name)
    if current is None:
        if len(p.traits) >= limit:
            return
    elif at < current[1]:
        return  # an older statement arriving late: the newer value stays
    elif current[0] == value:
        current[1], current[2] = at, source
        p.columns.add("traits")
        return
    p.traits[name] = [value, at, source]
    p.traits_changed = True
    p.columns.add("traits")
    if p.changed is not None:
        p.changed.add(name)


def _state_consent(
    p: ProfileState,
    statements: dict[str, Any],
    ev: ProcessedEvent,
    *,
    purposes: dict[str, str],
    source: str,
    changes: list[ConsentChange],
) -> None:
    # Sorted by purpose: PostgreSQL's JSONB does not keep the order of keys as sent.
    stated = sorted(
        (purpose, granted)
        for raw, value in list(statements.items())[:50]
        if (purpose := purposes.get(str(raw).strip().lower())) is not None
        and (granted := _consent_value(value)) is not None
    )
    for purpose, granted in stated:
        current = p.consent.get(purpose)
        if current is not None and ev.timestamp < current[1]:
            continue
        p.consent[purpose] = [granted, ev.timestamp, source]
        p.columns.add("consent")
        if current is None or current[0] != granted:
            changes.append(ConsentChange(p.id, purpose, granted, ev.timestamp, source, ev.id))


def apply_event(
    p: ProfileState,
    ev: ProcessedEvent,
    *,
    purposes: dict[str, str],
    max_traits: int,
    consent_changes: list[ConsentChange],
) -> None:
    """Count the event on the profile and take its traits and consent statements."""
    _count_event(p, ev)
    if ev.received_at > p.updated_at:
        p.updated_at = ev.received_at
    p.dirty = True
    payload = ev.payload
    if ev.type == "identify":
        traits = payload.get("traits")
        if isinstance(traits, dict):
            for name, value in traits.items():
                if name == "consent" and isinstance(value, dict):
                    _state_consent(
                        p,
                        value,
                        ev,
                        purposes=purposes,
                        source=f"{ev.source}:traits",
                        changes=consent_changes,
                    )
                elif name in _FLATTENED and isinstance(value, dict):
                    for sub, sub_value in value.items():
                        _set_trait(
                            p, f"{name}.{sub}", sub_value, ev.timestamp, ev.source, max_traits
                        )
                else:
                    _set_trait(p, name, value, ev.timestamp, ev.source, max_traits)
    context = payload.get("context")
    if isinstance(context, dict):
        consent = context.get("consent")
        if isinstance(consent, dict):
            preferences = consent.get("categoryPreferences")
            if isinstance(preferences, dict):
                _state_consent(
                    p,
                    preferences,
                    ev,
                    purposes=purposes,
                    source=f"{ev.source}:consent",
                    changes=consent_changes,
                )


def merge_into(survivor: ProfileState, merged: ProfileState) -> None:
    """Join `merged`'s state into `survivor`'s; `merged` is left empty, pointing at it."""
    for name, (value, at, source) in merged.traits.items():
        current = survivor.traits.get(name)
        if current is None or at > current[1]:
            survivor.traits[name] = [value, at, source]
    for purpose, statement in merged.consent.items():
        current = survivor.consent.get(purpose)
        if current is None or statement[1] > current[1]:
            survivor.consent[purpose] = list(statement)
    theirs = merged.computed
    ours = survivor.computed
    if theirs and not ours:
        ours.update(theirs)
    elif theirs:
        ours["first_seen"] = min(ours["first_seen"], theirs["first_seen"])
        ours["last_seen"] = max(ours["last_seen"], theirs["last_seen"])
        ours["events"] += theirs["events"]
        ours["orders"] += theirs["orders"]
        ours["revenue"] = round(ours["revenue"] + theirs["revenue"], 4)
        ours["channels"] = sorted(set(ours["channels"]) | set(theirs["channels"]))
        if "nps" in theirs and (
            "nps" not in ours
            or (theirs["nps"][1], theirs["nps"][2]) > (ours["nps"][1], ours["nps"][2])
        ):
            ours["nps"] = theirs["nps"]
        for key in ("by_type", "interests"):
            for name, count in theirs[key].items():
                ours[key][name] = ours[key].get(name, 0) + count
    survivor.user_ids = sorted(set(survivor.user_ids) | set(merged.user_ids))
    survivor.anonymous_ids += merged.anonymous_ids
    survivor.created_at = min(survivor.created_at, merged.created_at)
    survivor.updated_at = max(survivor.updated_at, merged.updated_at)
    survivor.dirty = survivor.traits_changed = True
    survivor.changed = None
    survivor.columns.update(COLUMNS_CHANGED_BY_MERGE)
    merged.traits, merged.consent, merged.computed, merged.derived = {}, {}, {}, {}
    merged.user_ids, merged.anonymous_ids = [], 0
    # Its traits went: so does what was derived from them (master data, customer key).
    merged.dirty = merged.traits_changed = True
    merged.columns.update(COLUMNS_CHANGED_BY_MERGE)


def trait_values(traits: dict[str, list[Any]]) -> dict[str, Any]:
    """The traits as a customer sees them: values only, `address.*` nested again."""
    out: dict[str, Any] = {}
    for name in sorted(traits):
        value = traits[name][0]
        head, dot, tail = name.partition(".")
        if dot and head in _FLATTENED:
            nested = out.setdefault(head, {})
            if isinstance(nested, dict):
                nested[tail] = value
        else:
            out[name] = value
    return out
