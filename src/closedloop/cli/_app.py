"""The Typer app and the helpers every command shares."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from weakref import WeakSet

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy.engine import Engine

from closedloop.config import Settings, load_settings
from closedloop.errors import ClosedloopError
from closedloop.store import create_store_engine, schema_problem, upgrade

__all__ = [
    "app",
    "console",
    "err_console",
    "fail",
    "handle_errors",
    "open_store",
    "settings",
    "upgrade_store",
]

app = typer.Typer(
    name="closedloop",
    help="closedloop: self-hosted customer sentiment and response hub.\n\n"
    "Example: `closedloop init && closedloop serve`",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # a docstring paragraph wrapped to the terminal
    add_completion=False,
)
# Control characters other than tab and newline, DEL and C1 included, shown as `\u001b`:
# the escape JSON has for them, so that `--json` output stays JSON.
_CONTROL = {c: f"\\u{c:04x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c not in (9, 10)}


class _DataConsole(Console):
    """What the commands print holds customers' data (ids, traits, event names: anyone with
    a source's public write key sends them). No markup: `[/b]` would be a Rich tag (an
    unmatched one raises) and `[link=...]` a link. Control characters are shown escaped:
    Rich passes an escape sequence (ESC `[2J`, ESC `]0;title` BEL) on to the terminal,
    which would obey it."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(text.translate(_CONTROL), **kwargs)


console = _DataConsole(markup=False, highlight=False, soft_wrap=True)
err_console = _DataConsole(stderr=True, markup=False, highlight=False, soft_wrap=True)


def fail(message: str) -> typer.Exit:
    err_console.print(f"error: {message}")
    return typer.Exit(1)


def one_identifier(given: dict[str, str | None]) -> tuple[str, str]:
    """The one identifier option given (`{"email": ..., "user_id": None, ...}`), or exit
    naming the options (`user_id` is `--user-id`)."""
    found = {k: v for k, v in given.items() if v is not None}
    if len(found) != 1:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise fail(f"give exactly one of {flags}")
    ((kind, value),) = found.items()
    return kind, value


# Engines a command opened with `open_store`; `handle_errors` closes them when it ends.
_open_engines: list[Engine] = []
_connected: WeakSet[Engine] = WeakSet()  # those of them that connected once


@contextmanager
def handle_errors() -> Iterator[None]:
    """Print a closedloop error's message (no traceback) and exit 1; close the store.
    A failure of the store says what is wrong with it (`_store_failure`)."""
    try:
        yield
    except ClosedloopError as exc:
        raise fail(exc.message) from exc
    except ValueError as exc:
        raise fail(str(exc)) from exc
    except sa.exc.DBAPIError as exc:
        raise fail(_store_failure(exc)) from exc
    finally:
        while _open_engines:
            _open_engines.pop().dispose()


def _store_failure(exc: sa.exc.DBAPIError) -> str:
    """What a command tells about its store's failure: that the store cannot be opened or
    reached, has no tables yet or an older schema (what to run), or else the driver's own
    words. Never the statement or its values."""
    reason = _first_line(exc.orig)
    if not _open_engines:
        return f"the store failed: {reason}"
    engine = _open_engines[-1]
    where = engine.url.render_as_string(hide_password=True)
    if engine not in _connected:  # never reached: not tried again (a timeout twice)
        return f"cannot open the store `{where}`: {reason}"
    try:
        problem = schema_problem(engine)
    except sa.exc.DBAPIError as again:
        return f"cannot open the store `{where}`: {_first_line(again.orig)}"
    if problem is not None:
        return f"the store `{where}` {problem}"
    return f"the store `{where}` failed: {reason}"


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else "no reason given"


def settings() -> Settings:
    try:
        return load_settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        err_console.print(f"error: invalid settings: {exc}")
        sys.exit(1)


def upgrade_store(engine: Engine) -> None:
    """Migrate the store; where a revision applied changes what is derived from events the
    processor had applied before, say so on stderr with what `closedloop rebuild` adds."""
    for note in upgrade(engine):
        err_console.print(f"warning: {note}.")


def open_store(config: Settings, *, background_checkpoints: bool = False) -> Engine:
    """The store's engine for one command; use it inside `handle_errors()`, which closes it.
    A long-running command (`worker`) checkpoints SQLite's WAL from a thread of its own."""
    engine = create_store_engine(
        config.database_url,
        sqlite_synchronous=config.ingest.sqlite_synchronous,
        background_checkpoints=background_checkpoints,
    )
    _open_engines.append(engine)
    sa.event.listen(engine, "connect", lambda _dbapi, _record: _connected.add(engine))
    return engine
