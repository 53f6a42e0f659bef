"""Surveys at work: identifies are evaluated, due invitations mailed, answers recorded.

- `evaluate` reads the identify events the processor has applied (its own cursor row
  `surveys` in `processor_cursors`, moved in the same transaction as what it writes), decides
  for each identify survey (`eligibility.decide`), logs every decision with its reason and
  queues an invitation when one is due (unique per survey, person and period).
- `send_due` mails the due invitations: queued -> sending -> sent (or failed after retries
  with backoff). A mail is marked `sending` with a lease before it goes out; a worker that
  died after sending leaves it `sending`, and it is sent again once the lease has passed:
  at most one duplicate per crash.
- `record_answer` takes a signed token's answer: one answer per invitation (a second one
  updates it), an `NPS Survey Answered` event and an identify with the `nps_*` traits into
  the event log, processed at once, so mood, segments and feeds see it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop import clock
from closedloop.config import Settings
from closedloop.errors import ConflictError, InvalidInputError, NotFoundError
from closedloop.identity._tables import identities
from closedloop.ingest._tables import events
from closedloop.ingest.log import LogPosition, committed_after
from closedloop.profiles._tables import event_attributions, processor_cursors, profiles
from closedloop.profiles.consent import record_for_profile
from closedloop.profiles.read import resolve_profile_id
from closedloop.runtime import PeriodicLoop
from closedloop.segments import condition_tree, condition_where
from closedloop.segments._tables import segment_changes
from closedloop.store import begin_write
from closedloop.surveys._tables import (
    survey_answers,
    survey_decisions,
    survey_invitations,
    surveys,
)
from closedloop.surveys.definition import SurveyDefinition, parse_survey
from closedloop.surveys.eligibility import Decision, Facts, checks, decide
from closedloop.surveys.forward import forward_identify
from closedloop.surveys.mail import Invitation, MailError, send_mail

__all__ = [
    "SURVEY_SOURCE",
    "Answer",
    "SurveyRunner",
    "evaluate",
    "facts_of",
    "invitation_of",
    "read_token",
    "record_answer",
    "send_due",
    "token_for",
]

SURVEY_SOURCE = "closedloop-surveys"
_CURSOR = "surveys"  # identify events, in the log's commit order
_ENTRY_CURSOR = "surveys_entries"  # segment entries, by change id
_SENDING_LEASE = timedelta(minutes=10)


def _definitions(conn: sa.Connection) -> list[SurveyDefinition]:
    rows = conn.execute(sa.select(surveys.c.definition).order_by(surveys.c.name)).scalars()
    return [parse_survey(document) for document in rows]


def _position(conn: sa.Connection, name: str) -> tuple[LogPosition, bool]:
    row = conn.execute(
        sa.select(processor_cursors.c.txid, processor_cursors.c.event_id).where(
            processor_cursors.c.name == name
        )
    ).first()
    if row is None:
        return LogPosition(), False
    return LogPosition(int(row.txid), int(row.event_id)), True


def _last_invited(conn: sa.Connection, survey: str, profile_id: str) -> datetime | None:
    found: datetime | None = conn.execute(
        sa.select(sa.func.max(survey_invitations.c.due_at)).where(
            survey_invitations.c.survey == survey,
            survey_invitations.c.profile_id == profile_id,
            survey_invitations.c.state != "failed",
        )
    ).scalar()
    return found


def _this_month(conn: sa.Connection, survey: str, at: datetime) -> int:
    start = at.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return int(
        conn.execute(
            sa.select(sa.func.count()).where(
                survey_invitations.c.survey == survey,
                survey_invitations.c.due_at >= start,
                survey_invitations.c.due_at < end,
                survey_invitations.c.state != "failed",
            )
        ).scalar_one()
    )


@dataclass(frozen=True)
class _Profile:
    id: str
    email: str | None
    traits: dict[str, Any]
    consent: dict[str, Any]
    locale: str


def _profile(
    conn: sa.Connection, *, key: str | None = None, profile_id: str | None = None
) -> _Profile | None:
    """The profile of an identity key (`u:...`, `a:...`) or with an id."""
    columns = (profiles.c.id, profiles.c.masterdata, profiles.c.traits, profiles.c.consent)
    if key is not None:
        stmt = (
            sa.select(*columns)
            .select_from(identities.join(profiles, profiles.c.id == identities.c.profile_id))
            .where(identities.c.key == key)
        )
    else:
        stmt = sa.select(*columns).where(
            profiles.c.id == profile_id, profiles.c.merged_into.is_(None)
        )
    row = conn.execute(stmt).first()
    if row is None:
        return None
    traits = row.traits or {}
    language = ""
    for name in ("locale", "language"):
        found = traits.get(name)
        if isinstance(found, list) and isinstance(found[0], str):
            language = found[0][:2].lower()
            break
    return _Profile(
        id=row.id,
        email=(row.masterdata or {}).get("email"),
        traits=traits,
        consent=row.consent or {},
        locale="en" if language == "en" else "de",
    )


def _in_audience(
    conn: sa.Connection,
    settings: Settings,
    definition: SurveyDefinition,
    profile_id: str,
    at: datetime,
) -> bool:
    if definition.audience is None:
        return True
    tree = condition_tree(definition.audience)
    where = condition_where(conn, settings, tree, at)
    found = conn.execute(sa.select(profiles.c.id).where(where, profiles.c.id == profile_id))
    return found.first() is not None


def facts_of(
    conn: sa.Connection,
    settings: Settings,
    definition: SurveyDefinition,
    profile: _Profile,
    at: datetime,
) -> Facts:
    created = profile.traits.get("createdAt") or profile.traits.get("created_at")
    return Facts(
        profile_id=profile.id,
        email=profile.email,
        consented=settings.profiles.granted(profile.consent, definition.purpose),
        created_at=created[0] if isinstance(created, list) else None,
        last_invited_at=_last_invited(conn, definition.name, profile.id),
        sent_this_month=_this_month(conn, definition.name, at),
        in_audience=_in_audience(conn, settings, definition, profile.id, at),
    )


def why(
    engine: Engine, settings: Settings, name: str, profile_id: str, *, at: datetime
) -> dict[str, Any]:
    """Why a customer would (not) be invited now: each timing rule with the value it looks
    at and pass or fail, and the next moment she could be invited."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(surveys.c.definition).where(surveys.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"no survey `{name[:64]}`")
        definition = parse_survey(row.definition)
        found = resolve_profile_id(conn, profile_id)
        profile = _profile(conn, profile_id=found) if found else None
        if profile is None:
            raise NotFoundError(f"no profile `{profile_id[:60]}`")
        facts = facts_of(conn, settings, definition, profile, at)
    found_checks, next_at = checks(definition, facts, at=at)
    return {
        "profile": profile.id,
        "checks": [{"rule": c.rule, "value": c.value, "passed": c.passed} for c in found_checks],
        "next_eligible_at": next_at.isoformat() if next_at else None,
        "decision": decide(definition, facts, at=at).reason,
    }


def _period(definition: SurveyDefinition, due: datetime) -> int:
    days = max(definition.interval_weeks * 7, 1)
    return due.date().toordinal() // days


def _record(
    conn: sa.Connection,
    definition: SurveyDefinition,
    profile: _Profile,
    decision: Decision,
    *,
    event_id: int,
    at: datetime,
) -> bool:
    conn.execute(
        survey_decisions.insert().values(
            survey=definition.name,
            profile_id=profile.id,
            event_id=event_id,
            at=at,
            invited=decision.invite,
            reason=decision.reason,
            due_at=decision.due_at,
        )
    )
    if not decision.invite or decision.due_at is None or not profile.email:
        return False
    period = _period(definition, decision.due_at)
    exists = conn.execute(
        sa.select(survey_invitations.c.id).where(
            survey_invitations.c.survey == definition.name,
            survey_invitations.c.profile_id == profile.id,
            survey_invitations.c.period == period,
        )
    ).first()
    if exists is not None:
        return False
    conn.execute(
        survey_invitations.insert().values(
            id="inv_" + secrets.token_hex(10),
            survey=definition.name,
            profile_id=profile.id,
            period=period,
            state="queued",
            due_at=decision.due_at,
            created_at=clock.now(),
            attempts=0,
            email=profile.email,
            locale=profile.locale,
        )
    )
    return True


def _lock_cursor(conn: sa.Connection, name: str) -> LogPosition:
    """The cursor row `name`, made when missing and locked for this transaction."""
    position, exists = _position(conn, name)
    if not exists:
        conn.execute(processor_cursors.insert().values(name=name, txid=0, event_id=0, seq=0))
    elif conn.dialect.name == "postgresql":
        conn.execute(
            sa.select(processor_cursors.c.name)
            .where(processor_cursors.c.name == name)
            .with_for_update()
        )
    return position


def _move_cursor(conn: sa.Connection, name: str, txid: int, event_id: int) -> None:
    conn.execute(
        processor_cursors.update()
        .where(processor_cursors.c.name == name)
        .values(txid=txid, event_id=event_id, updated_at=clock.now())
    )


def _decide_and_record(
    conn: sa.Connection,
    settings: Settings,
    definition: SurveyDefinition,
    profile: _Profile,
    *,
    trigger_id: int,
    at: datetime,
) -> int:
    decision = decide(definition, facts_of(conn, settings, definition, profile, at), at=at)
    return int(_record(conn, definition, profile, decision, event_id=trigger_id, at=at))


def evaluate(engine: Engine, settings: Settings, *, limit: int = 1000) -> int:
    """Decide for the identifies the processor applied, and the segment entries recorded,
    since the last pass; invitations queued. One pass at a time (the cursor rows are locked).
    """
    invited = 0
    with begin_write(engine) as conn:
        position = _lock_cursor(conn, _CURSOR)
        processed, _ = _position(conn, "main")
        every = _definitions(conn)
        on_identify = [d for d in every if d.trigger == "identify"]
        # (an identify applied to another profile than its anonymous id's: that profile)
        attributed = event_attributions.c
        stmt = committed_after(
            sa.select(
                events.c.id,
                events.c.txid,
                events.c.user_id,
                events.c.anonymous_id,
                events.c.timestamp,
                attributed.profile_id.label("attributed_to"),
            )
            .select_from(events.outerjoin(event_attributions, attributed.event_id == events.c.id))
            .where(events.c.type == "identify"),
            conn.dialect.name,
            position,
        )
        if conn.dialect.name == "postgresql":
            stmt = stmt.where(
                sa.tuple_(events.c.txid, events.c.id) <= sa.tuple_(processed.txid, processed.id)
            )
        else:
            stmt = stmt.where(events.c.id <= processed.id)
        rows = conn.execute(stmt.limit(limit)).all()
        for row in rows:
            if not on_identify:
                profile = None
            elif row.attributed_to is not None:
                profile = _profile(conn, profile_id=row.attributed_to)
            else:
                key = f"u:{row.user_id}" if row.user_id else f"a:{row.anonymous_id}"
                profile = _profile(conn, key=key)
            if profile is None:
                continue
            for definition in on_identify:
                invited += _decide_and_record(
                    conn, settings, definition, profile, trigger_id=row.id, at=row.timestamp
                )
        if rows:
            _move_cursor(conn, _CURSOR, int(rows[-1].txid or 0), int(rows[-1].id))
        invited += _evaluate_entries(conn, settings, every, limit=limit)
    return invited


def _evaluate_entries(
    conn: sa.Connection, settings: Settings, every: list[SurveyDefinition], *, limit: int
) -> int:
    """Segment-entry surveys: each `entered` change recorded since the last pass."""
    by_segment: dict[str, list[SurveyDefinition]] = {}
    for definition in every:
        if definition.trigger == "segment_entry" and definition.segment:
            by_segment.setdefault(definition.segment, []).append(definition)
    position = _lock_cursor(conn, _ENTRY_CURSOR)
    changes = segment_changes.c
    stmt = committed_after(
        sa.select(changes.id, changes.txid, changes.segment, changes.profile_id, changes.at).where(
            changes.change == "entered"
        ),
        conn.dialect.name,
        position,
        segment_changes,
    )
    rows = conn.execute(stmt.limit(limit)).all()
    invited = 0
    for row in rows:
        for definition in by_segment.get(row.segment, ()):
            profile = _profile(conn, profile_id=row.profile_id)
            if profile is not None:
                invited += _decide_and_record(
                    conn, settings, definition, profile, trigger_id=row.id, at=row.at
                )
    if rows:
        _move_cursor(conn, _ENTRY_CURSOR, int(rows[-1].txid or 0), int(rows[-1].id))
    return invited


# Tokens ----------------------------------------------------------------------------------


def _key(settings: Settings) -> bytes:
    secret = settings.secret_key.get_secret_value() if settings.secret_key else ""
    if not secret:
        raise ConflictError("`CLOSEDLOOP_SECRET_KEY` is not set: run `closedloop init`")
    return hashlib.sha256(b"closedloop-survey-token\x00" + secret.encode()).digest()


def token_for(settings: Settings, invitation_id: str, *, issued: datetime) -> str:
    """`<invitation>.<expiry>.<HMAC-SHA256>`, URL-safe."""
    expires = int((issued + timedelta(days=settings.surveys.token_days)).timestamp())
    body = f"{invitation_id}.{expires}"
    mac = hmac.new(_key(settings), body.encode(), hashlib.sha256).digest()
    return f"{body}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def read_token(settings: Settings, token: str, *, now: datetime) -> str:
    """The invitation id of a valid token; InvalidInputError for a forged or expired one."""
    parts = token.split(".")
    if len(token) > 200 or len(parts) != 3 or not (parts[1].isascii() and parts[1].isdigit()):
        raise InvalidInputError("this survey link is not valid", field="token")
    body = f"{parts[0]}.{parts[1]}"
    mac = hmac.new(_key(settings), body.encode(), hashlib.sha256).digest()
    expected = base64.urlsafe_b64encode(mac).decode().rstrip("=")
    if not hmac.compare_digest(expected, parts[2]):
        raise InvalidInputError("this survey link is not valid", field="token")
    if int(parts[1]) < now.timestamp():
        raise InvalidInputError("this survey link has expired", field="token", reason="expired")
    return parts[0]


# Sending ---------------------------------------------------------------------------------


def _consent_gone(
    conn: sa.Connection, settings: Settings, definition: SurveyDefinition, profile_id: str
) -> str | None:
    """Why an invitation must not go out now (checked as it is sent), or None."""
    found = resolve_profile_id(conn, profile_id)
    consent = (
        conn.execute(sa.select(profiles.c.consent).where(profiles.c.id == found)).scalar()
        if found is not None
        else None
    )
    if consent is None:
        return "the customer is gone (erased)"
    if not settings.profiles.granted(consent, definition.purpose):
        return f"no consent for `{definition.purpose}` when it was due"
    return None


def send_due(engine: Engine, settings: Settings, *, limit: int = 200) -> int:
    """Mail the invitations that are due; the number sent."""
    now = clock.now()
    c = survey_invitations.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(survey_invitations, surveys.c.definition)
            .join(surveys, surveys.c.name == c.survey)
            .where(
                sa.or_(
                    sa.and_(c.state == "queued", c.due_at <= now),
                    sa.and_(c.state == "sending", c.due_at < now),  # its sender died: again
                )
            )
            .order_by(survey_invitations.c.due_at)
            .limit(limit)
        ).all()
    sent = 0
    for row in rows:
        with begin_write(engine) as conn:
            claimed = conn.execute(
                survey_invitations.update()
                .where(
                    survey_invitations.c.id == row.id,
                    survey_invitations.c.state == row.state,
                    survey_invitations.c.due_at == row.due_at,
                )
                .values(
                    state="sending",
                    attempts=survey_invitations.c.attempts + 1,
                    due_at=now + _SENDING_LEASE,
                )
            ).rowcount
            if claimed != 1:
                continue  # another worker took it
            definition = parse_survey(row.definition)
            withdrawn = _consent_gone(conn, settings, definition, row.profile_id)
            if withdrawn is not None:  # consent withdrawn (or the person erased) since queued
                conn.execute(
                    survey_invitations.update()
                    .where(survey_invitations.c.id == row.id)
                    .values(state="cancelled", error=withdrawn)
                )
                continue
        mail = Invitation(
            id=row.id,
            email=row.email,
            locale=row.locale,
            token=token_for(settings, row.id, issued=now),
        )
        try:
            send_mail(settings, definition, mail)
        except MailError as exc:
            attempts = row.attempts + 1
            give_up = not exc.transient or attempts > settings.surveys.retries
            delay = settings.surveys.backoff_seconds * (2 ** (attempts - 1))
            with begin_write(engine) as conn:
                conn.execute(
                    survey_invitations.update()
                    .where(survey_invitations.c.id == row.id)
                    .values(
                        state="failed" if give_up else "queued",
                        due_at=now + timedelta(seconds=delay),
                        error=exc.message[:1000],
                    )
                )
            continue
        with begin_write(engine) as conn:
            conn.execute(
                survey_invitations.update()
                .where(survey_invitations.c.id == row.id)
                .values(state="sent", sent_at=clock.now(), error=None)
            )
        sent += 1
    return sent


# Answers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    invitation_id: str
    survey: str
    score: int
    comment: str | None
    locale: str
    updated: bool


def invitation_of(engine: Engine, settings: Settings, token: str) -> tuple[Any, SurveyDefinition]:
    invitation_id = read_token(settings, token, now=clock.now())
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(survey_invitations, surveys.c.definition)
            .join(surveys, surveys.c.name == survey_invitations.c.survey)
            .where(survey_invitations.c.id == invitation_id)
        ).first()
    if row is None:
        raise NotFoundError("this survey is no longer open")
    return row, parse_survey(row.definition)


def record_answer(
    engine: Engine, settings: Settings, token: str, *, score: object, comment: object
) -> Answer:
    """Record (or change) the answer of the token's invitation and put it into the log."""
    if isinstance(score, str) and (digits := score.strip()).isascii() and digits.isdigit():
        score = int(digits)  # ASCII digits: `int` refuses `²`, which `isdigit` takes
    if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 10:
        raise InvalidInputError("choose a score from 0 to 10", field="score")
    if comment is not None and not isinstance(comment, str):
        raise InvalidInputError("the comment is text", field="comment")
    text = (comment or "").strip()[:2000] or None
    row, _definition = invitation_of(engine, settings, token)
    now = clock.now()
    with begin_write(engine) as conn:
        updated = conn.execute(
            survey_answers.update()
            .where(survey_answers.c.invitation_id == row.id)
            .values(score=score, comment=text, updated_at=now)
        ).rowcount
        if not updated:
            conn.execute(
                survey_answers.insert().values(
                    invitation_id=row.id,
                    survey=row.survey,
                    profile_id=row.profile_id,
                    score=score,
                    comment=text,
                    answered_at=now,
                    updated_at=now,
                )
            )
    prefix = settings.surveys.trait_prefix
    stamp = now.isoformat()
    messages: list[dict[str, Any]] = [
        {
            "type": "track",
            "event": "NPS Survey Answer Changed" if updated else "NPS Survey Answered",
            "messageId": f"nps-{row.id}-{int(time.time() * 1000)}",
            "timestamp": stamp,
            "properties": {
                "score": score,
                "comment": text,
                "survey": row.survey,
                "invitation": row.id,
            },
        },
        {
            "type": "identify",
            "messageId": f"nps-traits-{row.id}-{int(time.time() * 1000)}",
            "timestamp": stamp,
            "traits": {
                f"{prefix}_rating": score,
                f"{prefix}_comment": text,
                f"{prefix}_date": now.date().isoformat(),
            },
        },
    ]
    found, who = record_for_profile(
        engine, settings, row.profile_id, messages, source=SURVEY_SOURCE
    )
    if settings.surveys.forward:
        with engine.connect() as conn:
            consent = conn.execute(
                sa.select(profiles.c.consent).where(profiles.c.id == found)
            ).scalar()
        forward_identify(settings, {**messages[1], **who}, consent=consent or {})
    return Answer(row.id, row.survey, score, text, row.locale, bool(updated))


class SurveyRunner(PeriodicLoop):
    """Evaluates new identifies and entries and sends due invitations inside `closedloop
    serve`, every `SURVEYS__POLL_SECONDS`."""

    name = "closedloop-surveys"

    def __init__(self, engine: Engine, settings: Settings) -> None:
        super().__init__(settings.surveys.poll_seconds)
        self._engine = engine
        self._settings = settings

    def run_once(self) -> None:
        evaluate(self._engine, self._settings)
        send_due(self._engine, self._settings)
