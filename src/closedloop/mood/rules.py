"""Mood rules: data, not code. Each rule turns a matching event into a signal.

A rule matches one of: a track event by name (with property conditions in `where`), a page
or screen by path (a glob with `*` only, never a regular expression), or an identify that
sets a trait (to a value in `equals`). Its signal is `weight`, or `weight` times a `scale`
of a property (piecewise linear over numbers, or a table of values). Rules are versioned in
the store; the defaults below apply until a version is stored.
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy.engine import Engine

from closedloop import clock
from closedloop.errors import InvalidInputError, invalid_from_validation
from closedloop.mood._tables import mood_rules

__all__ = [
    "DEFAULT_RULES",
    "MoodRule",
    "MoodRules",
    "RuleSet",
    "current_rules",
    "glob_matches",
    "parse_rules",
    "store_rules",
]

Scalar = str | int | float | bool

_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_PAGE = re.compile(r"^[A-Za-z0-9/_\-.~%*äöüÄÖÜß]{1,200}$")


def glob_matches(pattern: str, text: str) -> bool:
    """Glob match with `*` only, by splitting: linear, no backtracking; ASCII letters match
    either case (mood rules and segment conditions alike; the SQL of conditions agrees)."""
    parts = pattern.translate(_LOWER).split("*")
    text = text.translate(_LOWER)
    if len(parts) == 1:
        return text == parts[0]
    if not text.startswith(parts[0]) or not text.endswith(parts[-1]):
        return False
    position = len(parts[0])
    end = len(text) - len(parts[-1])
    for middle in parts[1:-1]:
        found = text.find(middle, position, end)
        if found < 0:
            return False
        position = found + len(middle)
    return position <= end


class Scale(BaseModel):
    """Signal strength from a property: `points` (x, factor) interpolated, or `values`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    property: str = Field(min_length=1, max_length=64)
    points: list[tuple[float, float]] | None = Field(None, min_length=2, max_length=20)
    values: dict[str, float] | None = Field(None, min_length=1, max_length=50)

    @model_validator(mode="after")
    def _one_kind(self) -> Scale:
        if (self.points is None) == (self.values is None):
            raise ValueError("give either `points` or `values`")
        if self.points is not None:
            xs = [x for x, _ in self.points]
            if xs != sorted(xs) or len(set(xs)) != len(xs):
                raise ValueError("`points` must be in increasing order of x")
            if any(not -1 <= f <= 1 for _, f in self.points):
                raise ValueError("every factor in `points` must be between -1 and 1")
        if self.values is not None and any(not -1 <= f <= 1 for f in self.values.values()):
            raise ValueError("every factor in `values` must be between -1 and 1")
        return self

    def factor(self, value: Any) -> float | None:
        if self.values is not None:
            return self.values.get(str(value).strip().lower()) if isinstance(value, str) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        points = self.points or []
        x = float(value)
        if x <= points[0][0]:
            return points[0][1]
        for (x0, f0), (x1, f1) in itertools.pairwise(points):
            if x <= x1:
                return f0 + (f1 - f0) * (x - x0) / (x1 - x0)
        return points[-1][1]


class MoodRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Lower-case id, e.g. `nps`.")
    label: str = Field(min_length=1, max_length=120, description="The reason as people read it.")
    event: str | None = Field(None, min_length=1, max_length=200)
    page: str | None = Field(None, description="Path glob, `*` only: `/account/kuendigung*`.")
    trait: str | None = Field(None, min_length=1, max_length=128)
    equals: Scalar | None = None
    where: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict, max_length=10)
    weight: float = Field(ge=-1, le=1)
    scale: Scale | None = None
    churn_risk: bool = False
    watch: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("use lower-case letters, digits and `_`, starting with a letter")
        return value

    @field_validator("page")
    @classmethod
    def _page(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/") or not _PAGE.fullmatch(value) or value.count("*") > 5:
            raise ValueError(
                "a path glob starts with `/` and has letters, digits, `/-_.~%` and at most "
                "5 `*` (no regular expressions)"
            )
        return value

    @model_validator(mode="after")
    def _one_match(self) -> MoodRule:
        given = [k for k in ("event", "page", "trait") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `event`, `page`, `trait`")
        if self.equals is not None and self.trait is None:
            raise ValueError("`equals` goes with `trait`")
        if self.where and self.event is None:
            raise ValueError("`where` goes with `event`")
        return self

    def matches_path(self, path: str) -> bool:
        return glob_matches(self.page or "", path)


class MoodRules(BaseModel):
    """A whole rule set, as `closedloop apply` and `PUT /v1/mood/rules` take it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["mood_rules"] = "mood_rules"
    rules: list[MoodRule] = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _unique(self) -> MoodRules:
        names = [r.name for r in self.rules]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"rule names must be unique: {', '.join(doubled)}")
        return self


_NPS = Scale(
    property="score",
    points=[(0, -1.0), (6, -0.4), (6.5, 0.0), (8.5, 0.0), (9, 0.6), (10, 1.0)],
)
DEFAULT_RULES = MoodRules(
    rules=[
        MoodRule(name="nps", label="NPS answer", event="NPS Answered", weight=1.0, scale=_NPS),
        MoodRule(
            name="nps_survey",
            label="NPS answer on a closedloop survey",
            event="NPS Survey Answered",
            weight=1.0,
            scale=_NPS,
        ),
        MoodRule(
            name="article_rated",
            label="rated an article",
            event="Article Rated",
            weight=0.4,
            scale=Scale(property="rating", points=[(1, -1.0), (3, 0.0), (5, 1.0)]),
        ),
        MoodRule(
            name="article_shared", label="shared an article", event="Article Shared", weight=0.3
        ),
        MoodRule(
            name="newsletter_subscribed",
            label="subscribed to the newsletter",
            event="Newsletter Subscribed",
            weight=0.2,
        ),
        MoodRule(
            name="newsletter_cancelled",
            label="cancelled the newsletter",
            event="Newsletter Unsubscribed",
            weight=-0.3,
        ),
        MoodRule(
            name="contract_term_page",
            label="looked at the contract term",
            page="/account/vertrag",
            weight=-0.1,
            watch=True,
        ),
        MoodRule(
            name="contract_change_page",
            label="looked at changing the contract",
            page="/account/vertrag/*",
            weight=-0.3,
        ),
        MoodRule(
            name="cancellation_page",
            label="visited the cancellation page",
            page="/account/kuendigung*",
            weight=-0.7,
            churn_risk=True,
        ),
        MoodRule(
            name="callcenter_complaint",
            label="complained at the call center",
            event="Call Logged",
            where={"reason": "complaint"},
            weight=-0.5,
        ),
        MoodRule(
            name="social_mention",
            label="mentioned us in social media",
            event="Social Mention",
            weight=0.3,
            scale=Scale(
                property="sentiment", values={"positive": 1.0, "neutral": 0.0, "negative": -1.0}
            ),
        ),
    ]
)


class RuleSet(BaseModel):
    """The rules in force and their version (0: the defaults, nothing stored)."""

    model_config = ConfigDict(frozen=True)

    version: int
    rules: MoodRules
    created_at: datetime | None = None


def parse_rules(document: Any) -> MoodRules:
    """Validate a rule set; the error names the first bad field (`rules[2].weight`)."""
    if not isinstance(document, dict):
        raise InvalidInputError("mood rules must be an object with `rules`", field="rules")
    try:
        return MoodRules.model_validate(document)
    except ValidationError as exc:
        raise invalid_from_validation(exc, root="rules") from exc


def current_rules(conn: sa.Connection | Engine) -> RuleSet:
    stmt = sa.select(mood_rules).order_by(mood_rules.c.version.desc()).limit(1)
    if isinstance(conn, Engine):
        with conn.connect() as c:
            row = c.execute(stmt).first()
    else:
        row = conn.execute(stmt).first()
    if row is None:
        return RuleSet(version=0, rules=DEFAULT_RULES)
    return RuleSet(
        version=row.version,
        rules=MoodRules.model_validate(row.document),
        created_at=row.created_at,
    )


def store_rules(engine: Engine, rules: MoodRules) -> RuleSet:
    """Store a new version; events processed from now on use it (`closedloop rebuild`
    applies it to the whole history)."""
    with engine.begin() as conn:
        result = conn.execute(
            mood_rules.insert().values(
                document=rules.model_dump(mode="json", exclude_none=True), created_at=clock.now()
            )
        )
        version = int(result.inserted_primary_key[0])  # type: ignore[index]
    return RuleSet(version=version, rules=rules, created_at=clock.now())
