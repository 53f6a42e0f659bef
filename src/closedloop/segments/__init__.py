"""Segments: the condition language (text and JSON tree), compiled to SQL, with a reference
evaluator; previews of a condition's members. (Stored segments with membership history
follow.)"""

from closedloop.segments.evaluate import ProfileFacts, evaluate, explain
from closedloop.segments.language import parse_condition, to_text, validate_tree
from closedloop.segments.preview import (
    DEFAULT_SEGMENTS,
    Preview,
    condition_tree,
    explain_profile,
    member_ids,
    members,
    preview,
    segment_tree,
)

__all__ = [
    "DEFAULT_SEGMENTS",
    "Preview",
    "ProfileFacts",
    "condition_tree",
    "evaluate",
    "explain",
    "explain_profile",
    "member_ids",
    "members",
    "parse_condition",
    "preview",
    "segment_tree",
    "to_text",
    "validate_tree",
]
