"""Saved surveys, their stats, and why a customer was or was not surveyed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop.errors import InvalidInputError, NotFoundError
from closedloop.profiles.read import resolve_profile_id
from closedloop.segments import condition_tree
from closedloop.segments._tables import segments
from closedloop.segments.history import history_of, segments_at
from closedloop.store import begin_write, store_definition
from closedloop.surveys._tables import (
    survey_answers,
    survey_decisions,
    survey_invitations,
    surveys,
)
from closedloop.surveys.definition import SurveyDefinition, parse_survey

__all__ = ["delete_survey", "eligibility", "get_survey", "list_surveys", "save_survey", "stats"]

_MAX_SURVEYS = 100


def _check_references(conn: sa.Connection, definition: SurveyDefinition) -> None:
    """The trigger segment exists and the audience condition parses."""
    if definition.segment is not None:
        known = conn.execute(
            sa.select(segments.c.name).where(segments.c.name == definition.segment)
        ).first()
        if known is None:
            raise InvalidInputError(
                f"no segment `{definition.segment}`: see `GET /v1/segments`", field="segment"
            )
    if definition.audience is not None:
        try:
            condition_tree(definition.audience)
        except InvalidInputError as exc:
            raise InvalidInputError(exc.message, field="audience") from exc


def save_survey(
    engine: Engine, document: Any, *, name: str | None = None, create: bool | None
) -> SurveyDefinition:
    definition = parse_survey(document, name=name)
    with begin_write(engine) as conn:
        _check_references(conn, definition)
        store_definition(
            conn,
            surveys,
            definition.name,
            definition.as_json(),
            create=create,
            kind="survey",
            limit=_MAX_SURVEYS,
        )
    return definition


def list_surveys(engine: Engine) -> list[SurveyDefinition]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(surveys.c.definition).order_by(surveys.c.name)).scalars()
        return [parse_survey(document) for document in rows]


def get_survey(engine: Engine, name: str) -> SurveyDefinition:
    with engine.connect() as conn:
        document = conn.execute(
            sa.select(surveys.c.definition).where(surveys.c.name == name)
        ).scalar()
    if document is None:
        raise NotFoundError(f"no survey `{name[:64]}`: see `GET /v1/surveys`")
    return parse_survey(document)


def delete_survey(engine: Engine, name: str) -> None:
    """Delete a survey; its invitations, decisions and answers go with it."""
    with begin_write(engine) as conn:
        if conn.execute(sa.select(surveys.c.name).where(surveys.c.name == name)).first() is None:
            raise NotFoundError(f"no survey `{name[:64]}`")
        for table in (survey_answers, survey_decisions, survey_invitations):
            conn.execute(table.delete().where(table.c.survey == name))
        conn.execute(surveys.delete().where(surveys.c.name == name))


def _nps(scores: dict[int, int]) -> dict[str, Any]:
    total = sum(scores.values())
    promoters = sum(n for s, n in scores.items() if s >= 9)
    detractors = sum(n for s, n in scores.items() if s <= 6)
    return {
        "n": total,
        "nps": round(100 * (promoters - detractors) / total) if total else None,
        "promoters": promoters,
        "passives": total - promoters - detractors,
        "detractors": detractors,
    }


def stats(engine: Engine, name: str, *, comments: int = 20) -> dict[str, Any]:
    """NPS, the 0-10 distribution, sent, answered, response and comment rates, by month,
    and the newest comments with their scores."""
    get_survey(engine, name)
    with engine.connect() as conn:
        states: dict[str, int] = dict(
            conn.execute(
                sa.select(survey_invitations.c.state, sa.func.count())
                .where(survey_invitations.c.survey == name)
                .group_by(survey_invitations.c.state)
            ).all()
        )
        answers = conn.execute(
            sa.select(
                survey_answers.c.score,
                survey_answers.c.comment,
                survey_answers.c.answered_at,
                survey_answers.c.invitation_id,
                survey_answers.c.profile_id,
            )
            .where(survey_answers.c.survey == name)
            .order_by(survey_answers.c.answered_at.desc())
        ).all()
        # Each answer's segments at the time of the answer.
        theirs = sa.select(survey_answers.c.profile_id).where(survey_answers.c.survey == name)
        history = history_of(conn, theirs)
    in_segments = {
        answer.invitation_id: segments_at(history.get(answer.profile_id, ()), answer.answered_at)
        for answer in answers
    }
    scores = dict.fromkeys(range(11), 0)
    months: dict[str, dict[int, int]] = {}
    weeks: dict[str, dict[int, int]] = {}
    by_segment: dict[str, dict[int, int]] = {}
    with_comment = 0
    for row in answers:
        scores[row.score] += 1
        month = row.answered_at.strftime("%Y-%m")
        months.setdefault(month, dict.fromkeys(range(11), 0))[row.score] += 1
        year, week, _day = row.answered_at.isocalendar()
        weeks.setdefault(f"{year}-W{week:02d}", dict.fromkeys(range(11), 0))[row.score] += 1
        for segment in in_segments.get(row.invitation_id, ()):
            by_segment.setdefault(segment, dict.fromkeys(range(11), 0))[row.score] += 1
        with_comment += 1 if row.comment else 0
    sent = int(states.get("sent", 0))
    answered = len(answers)
    return {
        "survey": name,
        **_nps(scores),
        "distribution": {str(k): v for k, v in scores.items()},
        "invitations": {state: int(count) for state, count in sorted(states.items())},
        "sent": sent,
        "answered": answered,
        "response_rate": round(answered / sent, 4) if sent else None,
        "comment_rate": round(with_comment / answered, 4) if answered else None,
        "by_month": [{"month": m, **_nps(v)} for m, v in sorted(months.items())],
        "by_week": [{"week": w, **_nps(v)} for w, v in sorted(weeks.items())],
        # by the segments the customers were in when they answered
        "by_segment": [{"segment": g, **_nps(v)} for g, v in sorted(by_segment.items())],
        "comments": [
            {"score": r.score, "comment": r.comment, "at": r.answered_at.isoformat()}
            for r in answers
            if r.comment
        ][:comments],
    }


def eligibility(engine: Engine, name: str, profile: str) -> dict[str, Any]:
    """Every decision about the profile for this survey, newest first, with its invitations."""
    get_survey(engine, name)
    with engine.connect() as conn:
        found = resolve_profile_id(conn, profile)
        if found is None:
            raise NotFoundError(f"no profile `{profile[:60]}`")
        decisions = conn.execute(
            sa.select(survey_decisions)
            .where(survey_decisions.c.survey == name, survey_decisions.c.profile_id == found)
            .order_by(survey_decisions.c.id.desc())
            .limit(100)
        ).all()
        invitations = conn.execute(
            sa.select(
                survey_invitations.c.id,
                survey_invitations.c.state,
                survey_invitations.c.due_at,
                survey_invitations.c.sent_at,
                survey_invitations.c.error,
            )
            .where(survey_invitations.c.survey == name, survey_invitations.c.profile_id == found)
            .order_by(survey_invitations.c.due_at.desc())
        ).all()

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "survey": name,
        "profile": found,
        "decisions": [
            {
                "at": iso(d.at),
                "event_id": d.event_id,
                "invited": d.invited,
                "reason": d.reason,
                "due_at": iso(d.due_at),
            }
            for d in decisions
        ],
        "invitations": [
            {
                "id": i.id,
                "state": i.state,
                "due_at": iso(i.due_at),
                "sent_at": iso(i.sent_at),
                "error": i.error,
            }
            for i in invitations
        ],
    }
