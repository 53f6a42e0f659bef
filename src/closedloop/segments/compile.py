"""Condition trees compiled to SQLAlchemy Core: parameterised SQL for SQLite and PostgreSQL.

Every value from a condition is a bound parameter; names (traits, properties) address JSON by
SQLAlchemy's JSON index operators, also bound. An event belongs to the profile of its user id,
else of its anonymous id (as the processor attributes it), so events join profiles through
one identity key. Mood is computed from the stored signals for the time asked, as the profile
API does: `value * 0.5 ** (age / half-life)`, summed; with a usable basis
(`closedloop.mood.index`) as a range of the index on each profile's factorised sum instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from closedloop.config import MoodSettings
from closedloop.errors import InvalidInputError
from closedloop.identity._tables import identities
from closedloop.ingest._tables import events
from closedloop.mood.index import (
    CHURN_KEY,
    K_KEY,
    LAST_KEY,
    MoodBasis,
    generated_column,
    number,
)
from closedloop.mood.score import DAY_US
from closedloop.profiles._tables import event_attributions, event_tallies, profiles
from closedloop.profiles.tallies import RECENT, TALLIED_PROPERTIES, facet
from closedloop.segments.trait_index import trait_value
from closedloop.store import UTCDateTime, to_epoch_us

__all__ = [
    "TalliedPart",
    "compile_condition",
    "consent_granted",
    "escape_like",
    "event_profile_key",
    "glob_to_like",
    "mood_score",
    "nps_number",
    "reads_log",
    "tallied_part",
    "tally_ids",
]

_LN_HALF = math.log(0.5)


def escape_like(text: str) -> str:
    """`text` for a LIKE pattern with `escape="\\"`: `%`, `_` and `\\` match themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def glob_to_like(pattern: str) -> str:
    """`/account/kuendigung*` -> `/account/kuendigung%`, with `%` `_` `\\` escaped."""
    return escape_like(pattern).replace("*", "%")


def event_profile_key() -> ColumnElement[str]:
    """The identity key an event is attributed by: its user id, else its anonymous id."""
    return sa.case(
        (events.c.user_id.is_not(None), sa.literal("u:") + events.c.user_id),
        else_=sa.literal("a:") + events.c.anonymous_id,
    )


def nps_number(position: int, pg: bool) -> ColumnElement[Any]:
    """A number of the latest NPS answer the processor keeps on the profile
    (`computed.nps = [score, at_us, event_id]`, `derived.nps = [score, at_us]`;
    `profiles.state`, `profiles.processor`): 0 the score, 1 its time. On SQLite from
    `derived`, written exactly as migration 0019 indexes them (its planner matches indexed
    expressions literally); on PostgreSQL the generated columns of migration 0014."""
    if pg:  # the generated columns of migration 0014
        if position == 0:
            return generated_column("nps_score", sa.Float())
        return generated_column("nps_at", sa.BigInteger())
    return sa.func.json_extract(profiles.c.derived, sa.literal_column(f"'$.nps[{position}]'"))


def _since(now: datetime, days: int | None) -> ColumnElement[Any] | None:
    if days is None:
        return None
    return events.c.timestamp >= sa.bindparam(None, now - timedelta(days=days), UTCDateTime())


class _Compiler:
    def __init__(
        self,
        dialect: str,
        *,
        now: datetime,
        mood: MoodSettings,
        segment: Callable[[str], dict[str, Any]],
        opt_out: frozenset[str] = frozenset(),
        basis: MoodBasis | None = None,
        indexed_traits: frozenset[str] = frozenset(),
        tallies: bool = True,
    ) -> None:
        self.pg = dialect == "postgresql"
        self.tallies = tallies
        self.basis = basis
        self.indexed_traits = frozenset() if self.pg else indexed_traits
        self.opt_out = opt_out
        self.now = now
        self.mood_settings = mood
        self.segment = segment
        self.stack: list[str] = []

    # -- building blocks
    def _events_of(self, *conditions: ColumnElement[bool] | None) -> sa.CompoundSelect[Any]:
        """The profile (`profile_id`) of each event meeting `conditions`, one row an event,
        attributed as the processor applied it: by its user id, else its anonymous id,
        unless it recorded the event for another profile (`event_attributions`: joined by
        e-mail or phone on someone else's device), then that one."""
        where = [c for c in conditions if c is not None]
        attributed = event_attributions.c
        not_recorded: ColumnElement[bool] = ~sa.exists().where(attributed.event_id == events.c.id)
        if not self.pg:  # PostgreSQL makes an anti-join of it, SQLite probes every event:
            # not those with a user id, which are never recorded.
            not_recorded = sa.or_(events.c.user_id.is_not(None), not_recorded)
        by_ids = (
            sa.select(identities.c.profile_id.label("profile_id"))
            .select_from(events.join(identities, identities.c.key == event_profile_key()))
            .where(*where, not_recorded)
        )
        # Driven by the few recorded events, each found by its primary key: not a second
        # pass over the events that meet `conditions`.
        recorded = sa.select(attributed.profile_id.label("profile_id")).where(
            sa.exists().where(events.c.id == attributed.event_id, *where)
        )
        return sa.union_all(by_ids, recorded)

    def _signals(self) -> tuple[Any, Callable[[int, Any], Any]]:
        """The profile's mood signals as rows, and an accessor for a position of a signal
        (`[time, value, rule, event, churn]`) typed as `type_`."""
        if self.pg:
            signals = sa.func.jsonb_array_elements(
                sa.func.coalesce(profiles.c.derived.op("->")("mood"), sa.text("'[]'::jsonb"))
            ).table_valued("value")
            return signals, lambda i, type_: signals.c.value.op("->>")(i).cast(type_)
        signals = sa.func.json_each(profiles.c.derived, "$.mood").table_valued("value")
        return signals, lambda i, _type: sa.func.json_extract(signals.c.value, f"$[{i}]")

    def _score(self) -> ColumnElement[float]:
        now = sa.bindparam(None, to_epoch_us(self.now), sa.BigInteger())
        half = sa.bindparam(None, self.mood_settings.half_life_days * float(DAY_US), sa.Float())
        signals, at = self._signals()
        greatest = sa.func.greatest if self.pg else sa.func.max
        age = greatest(0, now - at(0, sa.BigInteger))
        contribution = at(1, sa.Float) * sa.func.exp(_LN_HALF * age / half)
        return (
            sa.select(sa.func.coalesce(sa.func.sum(contribution), 0.0))
            .select_from(signals)
            .scalar_subquery()
        )

    def _churn(self) -> ColumnElement[bool]:
        since = to_epoch_us(self.now - timedelta(days=self.mood_settings.churn_risk_days))
        bound = sa.bindparam(None, since, sa.BigInteger())
        if self.basis is not None:
            return number(CHURN_KEY, self.pg) >= bound
        signals, at = self._signals()
        return sa.exists(
            sa.select(1)
            .select_from(signals)
            .where(at(4, sa.Integer) == 1, at(0, sa.BigInteger) >= bound)
        )

    # -- nodes
    def node(self, tree: dict[str, Any]) -> ColumnElement[bool]:
        ((kind, value),) = tree.items()
        if kind == "and":
            return sa.and_(*[self.node(c) for c in value])
        if kind == "or":
            return sa.or_(*[self.node(c) for c in value])
        if kind == "not":
            # Three-valued SQL logic: a missing trait is NULL; `not` must still be true there.
            return sa.not_(sa.func.coalesce(self.node(value), False))
        method: Callable[[Any], ColumnElement[bool]] = getattr(self, f"_{kind}")
        return method(value)

    def _label(self, score: Any, label: str, high: Any, low: Any) -> ColumnElement[bool]:
        if label == "positive":
            return score >= high  # type: ignore[no-any-return]
        if label == "negative":
            return score <= low  # type: ignore[no-any-return]
        return sa.and_(score > low, score < high)

    def _mood(self, label: str) -> ColumnElement[bool]:
        settings = self.mood_settings
        high, low = settings.positive_threshold, settings.negative_threshold
        if self.basis is None:
            return self._label(self._score(), label, high, low)
        # score = K / 2^((now - a)/h) for profiles without a signal after `now`: a range of K.
        now = to_epoch_us(self.now)
        power = self.basis.power(now)
        k, last = number(K_KEY, self.pg), number(LAST_KEY, self.pg)
        fast = self._label(
            k,
            label,
            sa.bindparam(None, high * power, sa.Float()),
            sa.bindparam(None, low * power, sa.Float()),
        )
        if label == "neutral":  # no signals: score 0, neutral (the thresholds straddle 0)
            fast = sa.or_(fast, k.is_(None))
        latest = self.basis.latest_us
        if latest is None or latest <= now:
            return fast  # no signal after `now`: the formula holds for every profile
        now_bound = sa.bindparam(None, now, sa.BigInteger())
        return sa.or_(
            # (a residual, not a second index range for the planner to take instead of K's)
            sa.and_(fast, sa.func.coalesce(last, 0) <= now_bound),
            sa.and_(last > now_bound, self._label(self._score(), label, high, low)),
        )

    def _churn_risk(self, _value: bool) -> ColumnElement[bool]:
        return self._churn()

    def _consent(self, purpose: str) -> ColumnElement[bool]:
        return consent_granted(self.pg, purpose, opt_out=purpose in self.opt_out)

    def _segment(self, name: str) -> ColumnElement[bool]:
        if name in self.stack:
            raise InvalidInputError(
                f"segment `{name}` refers to itself through {' -> '.join(self.stack)}",
                field="condition",
            )
        self.stack.append(name)
        try:
            return sa.func.coalesce(self.node(self.segment(name)), False)
        finally:
            self.stack.pop()

    def _latest_nps(self, spec: dict[str, Any]) -> ColumnElement[bool]:
        # The answer the processor keeps (`computed.nps`): one range of migration 0013's index.
        conditions = [_compare(nps_number(0, self.pg), spec["op"], float(spec["value"]))]
        if "within_days" in spec:
            since = to_epoch_us(self.now - timedelta(days=spec["within_days"]))
            conditions.append(nps_number(1, self.pg) >= sa.bindparam(None, since, sa.BigInteger()))
        return sa.and_(*conditions)

    def _visited_page(self, spec: dict[str, Any]) -> ColumnElement[bool]:
        path = _Json(self.pg, events.c.payload, "properties", "path").text()
        like = sa.bindparam(None, glob_to_like(spec["path"]).lower(), sa.String())
        # Case-insensitive for ASCII letters only, the same on both backends.
        matches = sa.func.lower(path.collate("C") if self.pg else path).like(like, escape="\\")
        return profiles.c.id.in_(
            self._events_of(
                events.c.type.in_(("page", "screen")),
                matches,
                _since(self.now, spec.get("within_days")),
            )
        )

    def _did(self, spec: dict[str, Any]) -> ColumnElement[bool]:
        tallied = self.tallied(spec)
        if tallied is not None:
            # Correlated: a refresh of the few profiles a batch wrote probes their rows by
            # primary key instead of first collecting every member.
            return sa.exists(
                tallied.with_only_columns(sa.literal(1)).where(
                    event_tallies.c.profile_id == profiles.c.id
                )
            )
        times = spec.get("at_least", 1)
        conditions: list[ColumnElement[bool] | None] = [
            events.c.type == "track",
            events.c.event == sa.bindparam(None, spec["event"], sa.String()),
            _since(self.now, spec.get("within_days")),
        ]
        for name, expected in spec.get("with", {}).items():
            prop = _Json(self.pg, events.c.payload, "properties", name)
            conditions.append(_typed_compare(prop, "=", expected))
        query: sa.CompoundSelect[Any] | sa.Select[Any] = self._events_of(*conditions)
        if times > 1:
            each = query.subquery()
            query = (
                sa.select(each.c.profile_id)
                .group_by(each.c.profile_id)
                .having(sa.func.count() >= times)
            )
        return profiles.c.id.in_(query)

    def tallied(
        self, spec: dict[str, Any], table: sa.FromClause = event_tallies
    ) -> sa.Select[Any] | None:
        """The profiles a `did` selects, from the event tallies (`table`, or an alias of
        it): the profile's count of the event (with the property value the facet names), or
        the time of its N-th newest one (`profiles.tallies`), read by event and facet from
        their index; None when only the log can answer it."""
        times = spec.get("at_least", 1)
        days = spec.get("within_days")
        kind = _tally_kind(spec)
        if not self.tallies or kind is None:
            return None
        tally = table.c
        if days is None:
            holds = tally.total >= sa.bindparam(None, times, sa.BigInteger())
        else:
            nth: Any = (
                tally.recent.op("->>")(sa.bindparam(None, times - 1, sa.Integer())).cast(
                    sa.BigInteger
                )
                if self.pg
                else sa.func.json_extract(tally.recent, sa.bindparam(None, f"$[{times - 1}]"))
            )
            since = to_epoch_us(self.now - timedelta(days=days))
            holds = nth >= sa.bindparam(None, since, sa.BigInteger())
        return sa.select(tally.profile_id).where(
            tally.event == sa.bindparam(None, spec["event"], sa.String()),
            tally.facet == sa.bindparam(None, kind, sa.String()),
            holds,
        )

    def _indexed_equal(self, name: str, value: _Json, expected: Any) -> ColumnElement[bool]:
        """`trait = expected` through the trait's index where that is exact: a text the
        index's `json_extract` returns only for that JSON string (numbers come back as
        numbers; arrays and objects as JSON text, which starts with `[` or `{`)."""
        if isinstance(expected, str) and not expected.startswith(("[", "{")):
            return trait_value(name) == sa.bindparam(None, expected, sa.String())
        return _typed_compare(value, "=", expected)

    def _trait(self, spec: dict[str, Any]) -> ColumnElement[bool]:
        value = _Json(self.pg, profiles.c.traits, spec["name"], 0)
        op = spec["op"]
        if spec["name"] in self.indexed_traits and op in ("=", "in"):
            items = spec["value"] if op == "in" else [spec["value"]]
            return sa.or_(*[self._indexed_equal(spec["name"], value, item) for item in items])
        if op == "present":
            return value.present()
        if op == "absent":
            return sa.not_(value.present())
        if op == "in":
            return sa.or_(*[_typed_compare(value, "=", item) for item in spec["value"]])
        if op in ("before", "after"):
            cutoff = (self.now - timedelta(days=spec["days_ago"])).date().isoformat()
            day: Any = sa.func.substr(value.text(), 1, 10)
            if self.pg:
                day = day.collate("C")  # byte order, as SQLite and Python compare
            bound = sa.bindparam(None, cutoff, sa.String())
            iso = day.like("____-__-__")  # only ISO dates compare as dates
            return sa.and_(iso, day < bound if op == "before" else day > bound)
        return _typed_compare(value, op, spec["value"])


def _tally_kind(spec: dict[str, Any]) -> str | None:
    """The facet of the tally rows that answer this `did`; None when only the log can (a
    property condition without a facet, or more times within a window than a row keeps)."""
    kind = _tally_facet(spec.get("with", {}))
    if kind is None or ("within_days" in spec and spec.get("at_least", 1) > RECENT):
        return None
    return kind


def _tally_facet(conditions: dict[str, Any]) -> str | None:
    """The tally rows that answer `did` with these property conditions: `""` for none, the
    facet of one condition on a tallied property; None when only the log can."""
    if not conditions:
        return ""
    if len(conditions) == 1:
        ((name, value),) = conditions.items()
        if name in TALLIED_PROPERTIES:
            return facet(name, value)
    return None


def _compare(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    bound: Any = sa.bindparam(None, value)
    operators: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    return operators[op](column, bound)


class _Json:
    """One value inside a JSON column, addressed by keys (and list positions), typed.

    Each accessor answers NULL unless the JSON value has that type, so `"abc"` never
    compares as a number and no cast can fail. Paths are bound parameters.
    """

    def __init__(self, pg: bool, column: Any, *keys: str | int) -> None:
        self.pg = pg
        if pg:
            path = sa.bindparam(None, [str(k) for k in keys], postgresql.ARRAY(sa.Text()))
            element = column.op("#>", return_type=postgresql.JSONB())(path)
            self.kind = sa.func.jsonb_typeof(element, type_=sa.Text())
            self.raw = column.op("#>>", return_type=sa.Text())(path)
        else:
            text = "$" + "".join(f"[{k}]" if isinstance(k, int) else f'."{k}"' for k in keys)
            path = sa.bindparam(None, text, sa.String())
            self.kind = sa.func.json_type(column, path)
            self.raw = sa.func.json_extract(column, path)

    def text(self) -> ColumnElement[Any]:
        return sa.case((self.kind == ("string" if self.pg else "text"), self.raw), else_=None)

    def number(self) -> ColumnElement[Any]:
        if self.pg:
            return sa.case((self.kind == "number", sa.cast(self.raw, sa.Float())), else_=None)
        return sa.case((self.kind.in_(("integer", "real")), self.raw), else_=None)

    def boolean(self) -> ColumnElement[Any]:
        if self.pg:
            return sa.case((self.kind == "boolean", self.raw == "true"), else_=None)
        return sa.case((self.kind.in_(("true", "false")), self.kind == "true"), else_=None)

    def present(self) -> ColumnElement[bool]:
        return sa.and_(self.kind.is_not(None), self.kind != "null")


def consent_granted(pg: bool, purpose: str, *, opt_out: bool = False) -> ColumnElement[bool]:
    """Whether the profile's latest statement for `purpose` grants it; without one, whether
    the purpose is opt-out (`ProfileSettings.consent_modes`)."""
    if pg:
        # One `->` a key and a comparison with a JSON constant: a third of the time of the
        # typed path (`jsonb_typeof` and `#>>` over a path array), which a feed pays for
        # every customer. A statement that is not `true` or `false` is none.
        element = profiles.c.consent.op("->", return_type=postgresql.JSONB())(
            sa.bindparam(None, purpose, sa.Text())
        ).op("->", return_type=postgresql.JSONB())(sa.literal_column("0", sa.Integer()))
        if opt_out:
            return sa.func.coalesce(element != sa.literal_column("'false'::jsonb"), True)
        return sa.func.coalesce(element == sa.literal_column("'true'::jsonb"), False)
    value = _Json(False, profiles.c.consent, purpose, 0)
    # SQLite: one `json_type` a row instead of two (each parses the document again; a feed
    # asks it of every customer): `true` grants, `false` withdraws, anything else (no
    # statement) is the purpose's default.
    if opt_out:
        return sa.func.coalesce(value.kind != "false", True)
    return sa.func.coalesce(value.kind == "true", False)


def _typed_compare(value: _Json, op: str, expected: Any) -> ColumnElement[bool]:
    """Compare a JSON value with a literal of the same JSON type; other types never match."""
    if isinstance(expected, bool):
        if op not in ("=", "!="):
            raise InvalidInputError(f"`{op}` does not compare true or false", field="condition")
        return _compare(value.boolean(), op, expected)
    if isinstance(expected, int | float):
        if value.pg:
            return _compare(value.number(), op, float(expected))
        # SQLite: compare first, check the type only where it holds (each JSON function
        # parses the document again; most rows fail the comparison).
        return sa.and_(
            _compare(value.raw, op, float(expected)), value.kind.in_(("integer", "real"))
        )
    if value.pg:
        return _compare(value.text().collate("C"), op, expected)
    return sa.and_(_compare(value.raw, op, expected), value.kind == "text")


def mood_score(dialect: str, *, now: datetime, mood: MoodSettings) -> ColumnElement[float]:
    """A profile's mood score as of `now`, as a column expression over `profiles`."""
    return _Compiler(dialect, now=now, mood=mood, segment=lambda _name: {})._score()


@dataclass(frozen=True)
class TalliedPart:
    """The `did` conditions of a tree that the event tallies answer (`tally_ids`), so a count
    can start from their index instead of probing the tallies once for every profile.

    `joined_by` says how they meet the `rest` of the condition (None when nothing is left):
    `and`, one tallied `did` the whole condition requires (the members are its ids among the
    rest's); `or`, every tallied `did` of the condition's `or` (the members are the union of
    their ids and the rest's).
    """

    dids: tuple[dict[str, Any], ...]
    rest: dict[str, Any] | None
    joined_by: Literal["and", "or"]


def tallied_part(tree: dict[str, Any]) -> TalliedPart | None:
    """The tree's tallied `did` conditions a count can start from: the condition itself, one
    part of its `and`, or the tallied parts of its `or`; None when there is none."""
    ((kind, value),) = tree.items()
    children = [tree] if kind == "did" else value if kind in ("and", "or") else []
    chosen = [
        n
        for n, child in enumerate(children)
        if set(child) == {"did"} and _tally_kind(child["did"]) is not None
    ]
    if not chosen:
        return None
    if kind != "or":
        chosen = chosen[:1]
    rest = [child for n, child in enumerate(children) if n not in chosen]
    joined_by: Literal["and", "or"] = "or" if kind == "or" else "and"
    return TalliedPart(
        dids=tuple(children[n]["did"] for n in chosen),
        rest=rest[0] if len(rest) == 1 else {joined_by: rest} if rest else None,
        joined_by=joined_by,
    )


def tally_ids(
    spec: dict[str, Any],
    dialect: str,
    *,
    now: datetime,
    mood: MoodSettings,
    table: sa.FromClause = event_tallies,
) -> sa.Select[Any]:
    """The ids of the live profiles a tallied `did` (of a `TalliedPart`) selects as of
    `now`, one row each (tally rows belong to live profiles only: merges move them, erasure
    deletes them), read from `table` (the tallies, or an alias for a second reading)."""
    compiler = _Compiler(dialect, now=now, mood=mood, segment=lambda _name: {})
    found = compiler.tallied(spec, table)
    if found is None:
        raise ValueError(f"the event tallies do not answer `{spec}`")  # `tallied_part` chose it
    return found


def reads_log(tree: dict[str, Any], *, segment: Callable[[str], dict[str, Any]]) -> bool:
    """Whether the compiled tree reads the event log (a page visit, or a `did` the event
    tallies cannot answer) rather than only each profile's own rows."""
    ((kind, value),) = tree.items()
    if kind in ("and", "or"):
        return any(reads_log(child, segment=segment) for child in value)
    if kind == "not":
        return reads_log(value, segment=segment)
    if kind == "segment":
        return reads_log(segment(value), segment=segment)
    if kind == "visited_page":
        return True
    return kind == "did" and _tally_kind(value) is None


def compile_condition(
    tree: dict[str, Any],
    dialect: str,
    *,
    now: datetime,
    mood: MoodSettings,
    segment: Callable[[str], dict[str, Any]],
    opt_out: frozenset[str] = frozenset(),
    basis: MoodBasis | None = None,
    indexed_traits: frozenset[str] = frozenset(),
    tallies: bool = True,
) -> ColumnElement[bool]:
    """A WHERE clause over `profiles` for the (validated) tree, as of `now`; `opt_out` names
    the purposes granted while a customer has said nothing; with `basis` (the usable one of
    `closedloop.mood.index`), mood conditions read the mood index; text equality on an
    `indexed_traits` trait reads its index (SQLite, `segments.trait_index`); `did` reads the
    event tallies (`profiles.tallies`) where they answer it, unless `tallies` is false (the
    log itself, for events the processor has not applied yet)."""
    return _Compiler(
        dialect,
        now=now,
        mood=mood,
        segment=segment,
        opt_out=opt_out,
        basis=basis,
        indexed_traits=indexed_traits,
        tallies=tallies,
    ).node(tree)
