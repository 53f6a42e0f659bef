"""Derivations other domains add to the processor, without the profiles domain knowing them.

A higher domain (mood, later segments) registers a `ProfileHook` when it is imported; the
processor then calls it for every event it applies and every merge, inside the batch's
transaction, and stores what it keeps in the profile's `derived` document under its name.
Every entry point (server, CLI) imports the domains, so every batch runs every hook.
"""

from __future__ import annotations

from typing import Any, Protocol

import sqlalchemy as sa

from closedloop.config import Settings
from closedloop.profiles.state import ProcessedEvent, ProfileState

__all__ = ["ProfileHook", "register", "registered"]


class ProfileHook(Protocol):
    name: str

    def prepare(self, conn: sa.Connection, settings: Settings) -> Any:
        """Once per batch, in its transaction: load what `on_event` needs (rules)."""

    def on_event(self, context: Any, p: ProfileState, ev: ProcessedEvent) -> bool:
        """Take the event into `p.derived[self.name]`; answer whether it changed."""

    def on_merge(self, context: Any, survivor: ProfileState, merged: ProfileState) -> None:
        """Join `merged`'s part into `survivor`'s."""


_HOOKS: dict[str, ProfileHook] = {}


def register(hook: ProfileHook) -> None:
    _HOOKS[hook.name] = hook


def registered() -> list[ProfileHook]:
    return [_HOOKS[name] for name in sorted(_HOOKS)]
