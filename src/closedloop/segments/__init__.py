"""Segments: the condition language (text and JSON tree) compiled to SQL, with a reference
evaluator; saved segments with their members, entries and exits; previews."""

from closedloop.segments.compile import consent_granted
from closedloop.segments.evaluate import ProfileFacts, evaluate, explain
from closedloop.segments.language import parse_condition, to_text, validate_tree
from closedloop.segments.preview import (
    Preview,
    condition_tree,
    explain_profile,
    member_ids,
    preview,
)
from closedloop.segments.store import (
    RefreshReport,
    SavedSegment,
    SegmentRefresher,
    changes,
    condition_where,
    count_moods,
    delete_segment,
    get_segment,
    index_history,
    latest_moods,
    list_segments,
    record_moods,
    refresh,
    save_segment,
    sizes,
    stored_members,
    tree_of,
)
from closedloop.segments.trait_index import ensure_trait_indexes

__all__ = [
    "Preview",
    "ProfileFacts",
    "RefreshReport",
    "SavedSegment",
    "SegmentRefresher",
    "changes",
    "condition_tree",
    "condition_where",
    "consent_granted",
    "count_moods",
    "delete_segment",
    "ensure_trait_indexes",
    "evaluate",
    "explain",
    "explain_profile",
    "get_segment",
    "index_history",
    "latest_moods",
    "list_segments",
    "member_ids",
    "parse_condition",
    "preview",
    "record_moods",
    "refresh",
    "save_segment",
    "sizes",
    "stored_members",
    "to_text",
    "tree_of",
    "validate_tree",
]
