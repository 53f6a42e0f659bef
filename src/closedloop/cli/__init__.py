"""The `closedloop` command line (Typer): one module per command group."""

from __future__ import annotations

from closedloop.cli import db, demo, events, importing, init, serve, sources  # noqa: F401
from closedloop.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
