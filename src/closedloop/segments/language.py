"""The condition language of segments: readable text for marketers, a JSON tree for programs.

    mood is negative or churn risk
    latest nps >= 9 within 90 days
    visited page "/account/kuendigung*" within 30 days
    did "Product Viewed" with category = "Laufschuhe" at least 2 times within 365 days
    trait plan = "gold" and trait city in ["Dresden", "Leipzig"]
    trait createdAt before 30 days ago and trait email is present
    consent surveys and not in segment detractors

Text is parsed by a grammar (lark, LALR); errors name the line and column and what was
expected. Both forms become the same tree of plain dicts, which is checked for size and
depth and then compiled to parameterised SQL (`compile`) or evaluated in Python (`evaluate`).
Nothing is ever evaluated as code; page patterns are globs with `*`, not regular expressions.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput

from closedloop.errors import InvalidInputError

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_TEXT",
    "parse_condition",
    "references",
    "to_text",
    "validate_tree",
]

MAX_TEXT = 4000
MAX_DEPTH = 12
MAX_NODES = 100
MAX_DAYS = 3650
MAX_LIST = 100
MOODS = ("positive", "neutral", "negative")
OPS = ("=", "!=", "<", "<=", ">", ">=")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
_PATTERN = re.compile(r"^[^\x00-\x1f]{1,200}$")

_GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr | or_expr _OR and_expr -> or_
?and_expr: not_expr | and_expr _AND not_expr -> and_
?not_expr: atom | _NOT not_expr -> not_
?atom: "(" or_expr ")" | cond
?cond: mood | churn | nps | visited | did | trait_cmp | trait_in | trait_is | trait_time
     | consent | member

mood: _MOOD _IS NAME
churn: _CHURN _RISK
nps: _LATEST _NPS OP number window?
visited: _VISITED _PAGE STRING window?
did: _DID STRING with_? times? window?
with_: _WITH prop ("," prop)*
prop: NAME "=" value
times: _AT _LEAST INT _TIMES
window: _WITHIN INT _DAYS
trait_cmp: _TRAIT NAME OP value
trait_in: _TRAIT NAME _IN list
trait_is: _TRAIT NAME _IS NAME
trait_time: _TRAIT NAME NAME INT _DAYS _AGO
consent: _CONSENT NAME
member: _IN _SEGMENT NAME

list: "[" [value ("," value)*] "]"
?value: STRING | number | TRUE | FALSE
number: SIGNED_NUMBER

OP: "<=" | ">=" | "!=" | "=" | "<" | ">"
_OR: "or"i
_AND: "and"i
_NOT: "not"i
_MOOD: "mood"i
_IS: "is"i
_CHURN: "churn"i
_RISK: "risk"i
_LATEST: "latest"i
_NPS: "nps"i
_VISITED: "visited"i
_PAGE: "page"i
_DID: "did"i
_WITH: "with"i
_AT: "at"i
_LEAST: "least"i
_TIMES: "times"i | "time"i
_WITHIN: "within"i
_DAYS: "days"i | "day"i
_TRAIT: "trait"i
_IN: "in"i
_AGO: "ago"i
_CONSENT: "consent"i
_SEGMENT: "segment"i
TRUE.2: "true"i
FALSE.2: "false"i
NAME: /[A-Za-z_][A-Za-z0-9_.\-]*/
STRING: /"([^"\\\n]|\\["\\\/bfnrtu])*"/
%import common.SIGNED_NUMBER
%import common.INT
%import common.WS
%ignore WS
"""

_PARSER = Lark(_GRAMMAR, parser="lalr", maybe_placeholders=False)


def _window(items: list[Any]) -> int | None:
    for item in items:
        if isinstance(item, dict) and "within_days" in item:
            return int(item["within_days"])
    return None


@v_args(inline=True)
class _ToTree(Transformer[Token, Any]):
    def or_(self, a: Any, b: Any) -> Any:
        return {"or": [*(a["or"] if isinstance(a, dict) and "or" in a else [a]), b]}

    def and_(self, a: Any, b: Any) -> Any:
        return {"and": [*(a["and"] if isinstance(a, dict) and "and" in a else [a]), b]}

    def not_(self, a: Any) -> Any:
        return {"not": a}

    def STRING(self, token: Token) -> str:  # noqa: N802 - lark calls terminals by name
        return str(json.loads(str(token)))

    def TRUE(self, _token: Token) -> bool:  # noqa: N802
        return True

    def FALSE(self, _token: Token) -> bool:  # noqa: N802
        return False

    def number(self, token: Token) -> float | int:
        text = str(token)
        return float(text) if any(c in text for c in ".eE") else int(text)

    def mood(self, label: Token) -> Any:
        return {"mood": str(label).lower()}

    def churn(self) -> Any:
        return {"churn_risk": True}

    def window(self, days: Token) -> Any:
        return {"within_days": int(days)}

    def times(self, count: Token) -> Any:
        return {"at_least": int(count)}

    def prop(self, name: Token, value: Any) -> Any:
        return (str(name), value)

    def with_(self, *props: Any) -> Any:
        return {"with": dict(props)}

    def nps(self, op: Token, value: Any, *rest: Any) -> Any:
        node: dict[str, Any] = {"op": str(op), "value": value}
        if (days := _window(list(rest))) is not None:
            node["within_days"] = days
        return {"latest_nps": node}

    def visited(self, path: str, *rest: Any) -> Any:
        node: dict[str, Any] = {"path": path}
        if (days := _window(list(rest))) is not None:
            node["within_days"] = days
        return {"visited_page": node}

    def did(self, event: str, *rest: Any) -> Any:
        node: dict[str, Any] = {"event": event}
        for item in rest:
            node.update(item)
        return {"did": node}

    def list(self, *values: Any) -> Any:
        return list(values)

    def trait_cmp(self, name: Token, op: Token, value: Any) -> Any:
        return {"trait": {"name": str(name), "op": str(op), "value": value}}

    def trait_in(self, name: Token, values: Any) -> Any:
        return {"trait": {"name": str(name), "op": "in", "value": values}}

    def trait_is(self, name: Token, state: Token) -> Any:
        return {"trait": {"name": str(name), "op": str(state).lower()}}

    def trait_time(self, name: Token, relation: Token, days: Token) -> Any:
        return {"trait": {"name": str(name), "op": str(relation).lower(), "days_ago": int(days)}}

    def consent(self, purpose: Token) -> Any:
        return {"consent": str(purpose)}

    def member(self, name: Token) -> Any:
        return {"segment": str(name)}


def _expected(exc: UnexpectedInput) -> str:
    names = sorted(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or [])
    shown = [n.lstrip("_").lower() for n in names][:8]
    return f"; expected {', '.join(shown)}" if shown else ""


def parse_condition(text: str) -> dict[str, Any]:
    """The tree of a condition written as text; errors point at line and column."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("empty condition: write e.g. `mood is positive`", field="condition")
    if len(text) > MAX_TEXT:
        raise InvalidInputError(
            f"condition too long: {len(text)} characters, at most {MAX_TEXT}", field="condition"
        )
    try:
        tree = _ToTree().transform(_PARSER.parse(text))
    except UnexpectedCharacters as exc:
        raise InvalidInputError(
            f"line {exc.line}, column {exc.column}: unexpected `{text[exc.pos_in_stream or 0]}`"
            f"{_expected(exc)}",
            field="condition",
        ) from exc
    except UnexpectedEOF as exc:
        raise InvalidInputError(
            f"the condition ends too early{_expected(exc)}", field="condition"
        ) from exc
    except UnexpectedInput as exc:
        token = getattr(exc, "token", None)
        if token is None or getattr(token, "type", "") == "$END":
            raise InvalidInputError(
                f"the condition ends too early{_expected(exc)}", field="condition"
            ) from exc
        raise InvalidInputError(
            f"line {exc.line}, column {exc.column}: unexpected `{token}`{_expected(exc)}",
            field="condition",
        ) from exc
    except (LarkError, RecursionError) as exc:
        raise InvalidInputError(f"invalid condition: {exc}", field="condition") from exc
    return validate_tree(tree)


def _fail(path: str, message: str) -> InvalidInputError:
    return InvalidInputError(f"invalid condition at `{path}`: {message}", field="condition")


def _days(node: dict[str, Any], key: str, path: str, *, required: bool = False) -> None:
    if key not in node:
        if required:
            raise _fail(path, f"`{key}` is required")
        return
    value = node[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DAYS:
        raise _fail(f"{path}.{key}", f"expected a whole number of days from 1 to {MAX_DAYS}")


def _scalar(value: Any, path: str) -> None:
    if isinstance(value, str):
        if len(value) > 500 or "\x00" in value:
            raise _fail(path, "text values have at most 500 characters, no NUL")
    elif isinstance(value, bool):
        return
    elif isinstance(value, int | float):
        if value != value or abs(value) > 1e15:  # NaN or absurd
            raise _fail(path, "numbers must be finite and below 10^15")
    else:
        raise _fail(path, "expected text, a number, true or false")


def _name(value: Any, path: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise _fail(path, "expected a name of letters, digits, `_`, `.` or `-`")
    return value


def validate_tree(tree: Any) -> dict[str, Any]:
    """Check a tree (from text or JSON): known nodes, values in range, size and depth."""
    count = [0]

    def visit(node: Any, path: str, depth: int) -> None:
        count[0] += 1
        if count[0] > MAX_NODES:
            raise _fail(path, f"more than {MAX_NODES} conditions")
        if depth > MAX_DEPTH:
            raise _fail(path, f"nested deeper than {MAX_DEPTH}")
        if not isinstance(node, dict) or len(node) != 1:
            raise _fail(path, "each condition is an object with one key")
        ((kind, value),) = node.items()
        where = f"{path}.{kind}" if path else kind
        if kind in ("and", "or"):
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_NODES:
                raise _fail(where, "expected a list of conditions")
            for index, child in enumerate(value):
                visit(child, f"{where}[{index}]", depth + 1)
        elif kind == "not":
            visit(value, where, depth + 1)
        elif kind == "mood":
            if value not in MOODS:
                raise _fail(where, f"expected one of {', '.join(MOODS)}")
        elif kind == "churn_risk":
            if value is not True:
                raise _fail(where, "expected true")
        elif kind == "consent" or kind == "segment":
            _name(value, where)
        elif kind == "latest_nps":
            if not isinstance(value, dict) or set(value) - {"op", "value", "within_days"}:
                raise _fail(where, "expected `op`, `value` and optionally `within_days`")
            if value.get("op") not in OPS:
                raise _fail(f"{where}.op", f"expected one of {' '.join(OPS)}")
            score = value.get("value")
            if (
                isinstance(score, bool)
                or not isinstance(score, int | float)
                or not 0 <= score <= 10
            ):
                raise _fail(f"{where}.value", "expected a score from 0 to 10")
            _days(value, "within_days", where)
        elif kind == "visited_page":
            if not isinstance(value, dict) or set(value) - {"path", "within_days"}:
                raise _fail(where, "expected `path` and optionally `within_days`")
            pattern = value.get("path")
            if (
                not isinstance(pattern, str)
                or not _PATTERN.fullmatch(pattern)
                or pattern.count("*") > 5
            ):
                raise _fail(
                    f"{where}.path", "expected a path with at most 5 `*` (no regular expressions)"
                )
            _days(value, "within_days", where)
        elif kind == "did":
            if not isinstance(value, dict) or set(value) - {
                "event",
                "with",
                "at_least",
                "within_days",
            }:
                raise _fail(
                    where, "expected `event` and optionally `with`, `at_least`, `within_days`"
                )
            event = value.get("event")
            if not isinstance(event, str) or not 1 <= len(event) <= 200 or "\x00" in event:
                raise _fail(f"{where}.event", "expected an event name")
            props = value.get("with", {})
            if not isinstance(props, dict) or len(props) > 10:
                raise _fail(f"{where}.with", "expected at most 10 property conditions")
            for prop, expected in props.items():
                _name(prop, f"{where}.with")
                _scalar(expected, f"{where}.with.{prop}")
            times = value.get("at_least", 1)
            if isinstance(times, bool) or not isinstance(times, int) or not 1 <= times <= 10_000:
                raise _fail(f"{where}.at_least", "expected a count from 1 to 10000")
            _days(value, "within_days", where)
        elif kind == "trait":
            _trait(value, where)
        else:
            raise _fail(where, "unknown condition")

    visit(tree, "", 0)
    return tree  # type: ignore[no-any-return]


def _trait(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise _fail(where, "expected `name` and `op`")
    _name(value.get("name"), f"{where}.name")
    op = value.get("op")
    if op in OPS:
        if set(value) != {"name", "op", "value"}:
            raise _fail(where, "a comparison needs `value`")
        _scalar(value["value"], f"{where}.value")
    elif op == "in":
        items = value.get("value")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_LIST:
            raise _fail(f"{where}.value", f"expected a list of 1 to {MAX_LIST} values")
        for index, item in enumerate(items):
            _scalar(item, f"{where}.value[{index}]")
    elif op in ("present", "absent"):
        if set(value) != {"name", "op"}:
            raise _fail(where, f"`{op}` takes no value")
    elif op in ("before", "after"):
        _days(value, "days_ago", where, required=True)
    else:
        raise _fail(f"{where}.op", "expected = != < <= > >= in present absent before after")


def references(tree: dict[str, Any]) -> set[str]:
    """The segments a (validated) tree refers to with `in segment NAME`."""
    ((kind, value),) = tree.items()
    if kind in ("and", "or"):
        return set().union(*(references(c) for c in value))
    if kind == "not":
        return references(value)
    return {value} if kind == "segment" else set()


def to_text(tree: dict[str, Any]) -> str:
    """The tree written as text (parsing it gives the same tree)."""
    ((kind, value),) = tree.items()
    if kind in ("and", "or"):
        return f" {kind} ".join(f"({to_text(c)})" for c in value)
    if kind == "not":
        return f"not ({to_text(value)})"
    if kind == "mood":
        return f"mood is {value}"
    if kind == "churn_risk":
        return "churn risk"
    if kind == "consent":
        return f"consent {value}"
    if kind == "segment":
        return f"in segment {value}"
    window = f" within {value['within_days']} days" if "within_days" in value else ""
    if kind == "latest_nps":
        return f"latest nps {value['op']} {_lit(value['value'])}{window}"
    if kind == "visited_page":
        return f"visited page {_lit(value['path'])}{window}"
    if kind == "did":
        props = ", ".join(f"{k} = {_lit(v)}" for k, v in value.get("with", {}).items())
        text = f"did {_lit(value['event'])}" + (f" with {props}" if props else "")
        if "at_least" in value:
            text += f" at least {value['at_least']} times"
        return text + window
    op = value["op"]
    if op in ("present", "absent"):
        return f"trait {value['name']} is {op}"
    if op in ("before", "after"):
        return f"trait {value['name']} {op} {value['days_ago']} days ago"
    if op == "in":
        return f"trait {value['name']} in [{', '.join(_lit(v) for v in value['value'])}]"
    return f"trait {value['name']} {op} {_lit(value['value'])}"


def _lit(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)
