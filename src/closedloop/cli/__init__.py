"""The `closedloop` command line (Typer): one module per command group."""

from __future__ import annotations

from closedloop.cli import (  # noqa: F401
    apply,
    db,
    demo,
    events,
    feeds,
    importing,
    init,
    mood,
    privacy,
    profiles,
    segments,
    serve,
    sources,
    surveys,
    tokens,
    users,
    worker,
)
from closedloop.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
