"""A survey's definition: the question, who is asked when, and how the mail is sent.

Definitions are data (`closedloop apply`, `/v1/surveys`), validated with errors that name
the field (`window.start`).
"""

from __future__ import annotations

import re
from datetime import time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from closedloop.errors import parse_definition

__all__ = ["Question", "SurveyDefinition", "Window", "parse_survey"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_ADDRESS = re.compile(r"^(?:[^<>@\s][^<>@]{0,80} <)?[^<>@\s]{1,64}@[A-Za-z0-9.\-]{1,190}>?$")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Question(_Model):
    de: str = Field(
        "Wie wahrscheinlich ist es, dass Sie uns einem Freund oder Kollegen empfehlen?",
        min_length=1,
        max_length=300,
    )
    en: str = Field(
        "How likely is it that you would recommend us to a friend or colleague?",
        min_length=1,
        max_length=300,
    )


class Window(_Model):
    """When mails go out: between `start` and `end` local time on `days`."""

    start: time = time(9, 0)
    end: time = time(18, 0)
    timezone: str = "Europe/Berlin"
    days: tuple[str, ...] = _DAYS[:6]

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone `{value}`: e.g. `Europe/Berlin`") from exc
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or any(day not in _DAYS for day in value):
            raise ValueError(f"days from {', '.join(_DAYS)}")
        return value

    @model_validator(mode="after")
    def _order(self) -> Window:
        if self.end <= self.start:
            raise ValueError("`end` must be after `start`")
        return self


class SurveyDefinition(_Model):
    name: str
    question: Question = Field(default_factory=Question)
    trigger: Literal["identify", "segment_entry"] = "identify"
    segment: str | None = Field(None, description="The segment whose entry triggers.")
    audience: Any = Field(None, description="A condition the customer must meet too.")
    min_delay_days: int = Field(0, ge=0, le=3650)
    max_delay_days: int = Field(0, ge=0, le=3650, description="0: no maximum.")
    interval_weeks: int = Field(26, ge=0, le=520)
    sample_percent: float = Field(100, gt=0, le=100)
    monthly_budget: int | None = Field(None, ge=1, le=10_000_000)
    window: Window = Field(default_factory=Window)
    sender: str = Field("closedloop <nps@localhost>", max_length=200)
    reply_to: str | None = Field(None, max_length=200)
    purpose: str = Field("surveys", max_length=64)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("lower-case letters, digits, `-` and `_`, at most 64")
        return value

    @field_validator("sender", "reply_to")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and (not _ADDRESS.fullmatch(value) or "\n" in value or "\r" in value):
            raise ValueError("an address such as `Shop <nps@shop.example>`")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SurveyDefinition:
        if self.max_delay_days and self.max_delay_days < self.min_delay_days:
            raise ValueError("`max_delay_days` (0: none) is below `min_delay_days`")
        if self.trigger == "segment_entry" and not self.segment:
            raise ValueError("a `segment_entry` survey names its `segment`")
        return self

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def parse_survey(document: Any, *, name: str | None = None) -> SurveyDefinition:
    """Validate a survey definition; the error names the first bad field."""
    found: SurveyDefinition = parse_definition(
        SurveyDefinition, document, name=name, root="survey", shape="an object with `name`"
    )
    return found
