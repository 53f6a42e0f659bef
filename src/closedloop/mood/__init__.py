"""Mood: rules (data) turn events into signals; signals with time decay give each customer a
mood (positive, neutral, negative), a churn-risk flag and the reasons.

Importing this package registers its hook with the processor (`profiles.hooks`).
"""

from closedloop.mood.index import ensure_basis, usable_basis
from closedloop.mood.rules import (
    DEFAULT_RULES,
    MoodRule,
    MoodRules,
    RuleSet,
    current_rules,
    parse_rules,
    store_rules,
)
from closedloop.mood.score import Mood, MoodHook, describe, signal_of, summary
from closedloop.profiles import hooks as _hooks

_hooks.register(MoodHook())

__all__ = [
    "DEFAULT_RULES",
    "Mood",
    "MoodHook",
    "MoodRule",
    "MoodRules",
    "RuleSet",
    "current_rules",
    "describe",
    "ensure_basis",
    "parse_rules",
    "signal_of",
    "store_rules",
    "summary",
    "usable_basis",
]
