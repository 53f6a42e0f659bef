"""Dashboard users, roles and sessions.

Passwords are hashed with argon2id (argon2-cffi's defaults). A session is a random cookie
value (`secrets.token_urlsafe`); only its SHA-256 is stored, with the user, a CSRF token for
the session's forms and an expiry (sliding: renewed when half of it has passed).

Roles: `admin` sees and does everything; `marketer` everything but privacy; `agent` only the
customer lookup (the call-center screen); `viewer` the aggregate views, with personal data
hidden (no customer lookup, no comments, no e-mail addresses).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.engine import Engine

from closedloop import clock
from closedloop.access._tables import ui_sessions, users
from closedloop.errors import ConflictError, InvalidInputError, NotFoundError
from closedloop.store import begin_write

__all__ = [
    "LOCALES",
    "ROLES",
    "Role",
    "Session",
    "User",
    "add_user",
    "end_session",
    "list_users",
    "log_in",
    "remove_user",
    "session_of",
    "set_locale",
    "set_password",
]

Role = Literal["admin", "marketer", "agent", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "marketer", "agent", "viewer")
LOCALES = ("de", "en")
SESSION_HOURS = 12
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.@-]{0,63}$")
_HASHER = PasswordHasher()
# A hash to verify against when the user does not exist: the answer takes as long either way.
_DUMMY = _HASHER.hash("closedloop-no-such-user")


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    locale: str
    created_at: datetime
    last_login_at: datetime | None
    disabled: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "locale": self.locale,
            "created_at": self.created_at.isoformat(),
            "last_login_at": self.last_login_at.isoformat() if self.last_login_at else None,
            "disabled": self.disabled,
        }


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str
    expires_at: datetime


def _user(row: Any) -> User:
    return User(row.name, row.role, row.locale, row.created_at, row.last_login_at, row.disabled)


def _check(name: str, role: str, locale: str, password: str | None) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidInputError(
            f"invalid user name `{name[:40]}`: lower-case letters, digits, `_ . @ -`",
            field="name",
        )
    if role not in ROLES:
        raise InvalidInputError(
            f"invalid role `{role[:20]}`: one of {', '.join(ROLES)}", field="role"
        )
    if locale not in LOCALES:
        raise InvalidInputError(
            f"invalid locale `{locale[:8]}`: one of {', '.join(LOCALES)}", field="locale"
        )
    if password is not None and not 12 <= len(password) <= 200:
        raise InvalidInputError("the password needs 12 to 200 characters", field="password")


def add_user(
    engine: Engine, name: str, *, role: str, locale: str = "de", password: str | None = None
) -> str:
    """Add a user; answer the password (a generated one unless given)."""
    password = password if password is not None else secrets.token_urlsafe(15)
    _check(name, role, locale, password)
    with begin_write(engine) as conn:
        if conn.execute(sa.select(users.c.name).where(users.c.name == name)).first():
            raise ConflictError(f"user `{name}` exists already")
        conn.execute(
            users.insert().values(
                name=name,
                password_hash=_HASHER.hash(password),
                role=role,
                locale=locale,
                created_at=clock.now(),
                disabled=False,
            )
        )
    return password


def set_password(engine: Engine, name: str, password: str | None = None) -> str:
    """A new password (generated unless given); the user's sessions end."""
    password = password if password is not None else secrets.token_urlsafe(15)
    _check(name, "admin", "de", password)
    with begin_write(engine) as conn:
        changed = conn.execute(
            users.update().where(users.c.name == name).values(password_hash=_HASHER.hash(password))
        ).rowcount
        if not changed:
            raise NotFoundError(f"no user `{name[:60]}`")
        conn.execute(ui_sessions.delete().where(ui_sessions.c.user_name == name))
    return password


def set_locale(engine: Engine, name: str, locale: str) -> None:
    _check(name, "admin", locale, None)
    with begin_write(engine) as conn:
        conn.execute(users.update().where(users.c.name == name).values(locale=locale))


def list_users(engine: Engine) -> list[User]:
    with engine.connect() as conn:
        return [_user(r) for r in conn.execute(sa.select(users).order_by(users.c.name))]


def remove_user(engine: Engine, name: str) -> None:
    with begin_write(engine) as conn:
        gone = conn.execute(users.delete().where(users.c.name == name)).rowcount
        conn.execute(ui_sessions.delete().where(ui_sessions.c.user_name == name))
    if not gone:
        raise NotFoundError(f"no user `{name[:60]}`")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def log_in(engine: Engine, name: str, password: str) -> tuple[str, Session] | None:
    """Check the password; a new session (its cookie value and the session), or None."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(users).where(users.c.name == name[:64])).first()
    try:
        _HASHER.verify(row.password_hash if row is not None else _DUMMY, password[:200])
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None or row.disabled:
        return None
    cookie = secrets.token_urlsafe(32)
    now = clock.now()
    session = Session(_user(row), secrets.token_urlsafe(32), now + timedelta(hours=SESSION_HOURS))
    with begin_write(engine) as conn:
        conn.execute(ui_sessions.delete().where(ui_sessions.c.expires_at < now))
        conn.execute(
            ui_sessions.insert().values(
                id_hash=_digest(cookie),
                user_name=row.name,
                csrf_token=session.csrf_token,
                created_at=now,
                expires_at=session.expires_at,
            )
        )
        conn.execute(users.update().where(users.c.name == row.name).values(last_login_at=now))
    return cookie, session


def session_of(engine: Engine, cookie: str) -> Session | None:
    """The live session of a cookie value (renewed when half its time has passed)."""
    if not cookie or len(cookie) > 100:
        return None
    digest = _digest(cookie)
    now = clock.now()
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(ui_sessions, users)
            .join(users, users.c.name == ui_sessions.c.user_name)
            .where(ui_sessions.c.id_hash == digest)
        ).first()
    if row is None or row.expires_at <= now or row.disabled:
        return None
    expires = row.expires_at
    if expires - now < timedelta(hours=SESSION_HOURS / 2):
        expires = now + timedelta(hours=SESSION_HOURS)
        with begin_write(engine) as conn:
            conn.execute(
                ui_sessions.update()
                .where(ui_sessions.c.id_hash == digest)
                .values(expires_at=expires)
            )
    return Session(_user(row), row.csrf_token, expires)


def end_session(engine: Engine, cookie: str) -> None:
    with begin_write(engine) as conn:
        conn.execute(ui_sessions.delete().where(ui_sessions.c.id_hash == _digest(cookie)))
