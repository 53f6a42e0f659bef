"""Segments: the condition language (text and JSON tree), compiled to SQL, with a reference
evaluator; previews of a condition's members. (Stored segments with membership history
follow.)"""

from closedloop.segments.evaluate import ProfileFacts, evaluate
from closedloop.segments.language import parse_condition, to_text, validate_tree
from closedloop.segments.preview import (
    DEFAULT_SEGMENTS,
    Preview,
    condition_tree,
    member_ids,
    preview,
)

__all__ = [
    "DEFAULT_SEGMENTS",
    "Preview",
    "ProfileFacts",
    "condition_tree",
    "evaluate",
    "member_ids",
    "parse_condition",
    "preview",
    "to_text",
    "validate_tree",
]
