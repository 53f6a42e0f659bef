"""Segment messages: validation and normalisation into event-log rows.

Lenient where the official SDKs differ (explicit nulls, ms or us timestamps with `Z` or an
offset, identify traits in `context.traits`, numeric ids), strict where the log needs it
(required ids, sizes, depth). Every rejection is an `InvalidInputError` naming the field.
"""

from __future__ import annotations

import itertools
import secrets
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from closedloop.config import IngestSettings
from closedloop.errors import InvalidInputError, PayloadTooLargeError

__all__ = ["CALL_TYPES", "EventRow", "normalise_message", "parse_timestamp"]

CALL_TYPES = ("identify", "track", "page", "screen", "group", "alias")
_ID_FIELDS = ("userId", "anonymousId", "groupId", "previousId")
_OBJECT_FIELDS = ("properties", "traits", "context", "integrations")
_STRING_FIELDS = ("event", "name", "category")


class EventRow(NamedTuple):
    """One validated message, ready for the event log (column order: `EVENT_COLUMNS`).

    A named tuple, not a frozen dataclass: one is made per event on the request path, and a
    tuple is built several times faster.
    """

    message_id: str
    type: str
    event: str | None
    user_id: str | None
    anonymous_id: str | None
    timestamp: datetime
    original_timestamp: datetime | None
    sent_at: datetime | None
    received_at: datetime
    payload: str

    def as_tuple(self, source_id: int) -> tuple[Any, ...]:
        return (source_id, *self)


def _invalid(field: str, reason: str, message: str) -> InvalidInputError:
    return InvalidInputError(message, field=field, reason=reason)


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_timestamp(value: Any, field: str) -> datetime | None:
    """Parse an ISO-8601 date-time (naive means UTC); None and "" mean absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _invalid(
            field,
            "invalid_timestamp",
            f"invalid `{field}` `{_show(value)}`: expected an ISO-8601 date-time string "
            "such as `2026-11-22T10:50:31.543Z`",
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _invalid(
            field,
            "invalid_timestamp",
            f"invalid `{field}` `{_show(value)}`: expected an ISO-8601 date-time such as "
            "`2026-11-22T10:50:31.543Z`",
        ) from exc
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise _invalid(
            field, "invalid_timestamp", f"invalid `{field}` `{_show(value)}`: out of range"
        ) from exc


def _identifier(message: dict[str, Any], field: str, limit: int) -> str | None:
    value = message.get(field)
    if value is None or value == "":
        return None
    if type(value) is str and len(value) <= limit and "\x00" not in value:
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _invalid(
            field,
            "invalid_type",
            f"invalid `{field}` `{_show(value)}`: expected a string (or a number)",
        )
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        raise _invalid(
            field,
            "too_long",
            f"`{field}` is {len(text)} characters long: at most {limit} are allowed",
        )
    if "\x00" in text:
        raise _invalid(field, "invalid_value", f"`{field}` contains a NUL character")
    if text != value:
        message[field] = text
    return text


_ID_PREFIX = secrets.token_hex(8)
_id_counter = itertools.count()


def _generated_message_id() -> str:
    """A unique id for a message that came without one (random per process, then a counter)."""
    return f"cl-{_ID_PREFIX}-{next(_id_counter):x}"


def _depth_exceeded(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def _nul_path(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return f"{path}.{key!r}"
            found = _nul_path(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, f"{path}[{index}]")
            if found:
                return found
    return None


def normalise_message(
    message: Any,
    *,
    call_type: str | None,
    limits: IngestSettings,
    received_at: datetime,
    sent_at: datetime | None,
) -> EventRow:
    """Validate one message and return its log row.

    `call_type` is the route's type (`/v1/track`), or None in a batch, where each message
    names its own. `sent_at` is the envelope's `sentAt` (a message's own wins). The message
    dict is updated in place (normalised fields) and stored without `writeKey`.
    """
    if not isinstance(message, dict):
        raise _invalid(
            "", "invalid_type", f"expected a JSON object for the message, got `{_show(message)}`"
        )
    kind = message.get("type") if call_type is None else call_type
    if kind not in CALL_TYPES:
        if kind is None:
            raise _invalid(
                "type", "missing_field", "`type` is required: one of " + ", ".join(CALL_TYPES)
            )
        raise _invalid(
            "type",
            "invalid_value",
            f"invalid `type` `{_show(kind)}`: expected one of {', '.join(CALL_TYPES)}",
        )
    message["type"] = kind
    message.pop("writeKey", None)

    user_id = _identifier(message, "userId", limits.max_id_length)
    anonymous_id = _identifier(message, "anonymousId", limits.max_id_length)
    for field in ("groupId", "previousId"):
        _identifier(message, field, limits.max_id_length)
    if kind == "alias":
        if message.get("previousId") in (None, ""):
            raise _invalid("previousId", "missing_field", "`previousId` is required for alias")
        if user_id is None:
            raise _invalid("userId", "missing_field", "`userId` is required for alias")
    elif user_id is None and anonymous_id is None:
        raise _invalid(
            "userId",
            "missing_field",
            "`userId` or `anonymousId` is required: send at least one of them",
        )
    if kind == "group" and message.get("groupId") in (None, ""):
        raise _invalid("groupId", "missing_field", "`groupId` is required for group")

    for field in _OBJECT_FIELDS:
        value = message.get(field)
        if value is not None and not isinstance(value, dict):
            raise _invalid(
                field, "invalid_type", f"invalid `{field}` `{_show(value)}`: expected an object"
            )
    for field in _STRING_FIELDS:
        value = message.get(field)
        if value is not None and not isinstance(value, str):
            raise _invalid(
                field, "invalid_type", f"invalid `{field}` `{_show(value)}`: expected a string"
            )
    name: str | None
    if kind == "track":
        name = message.get("event")
        if not name:
            raise _invalid("event", "missing_field", "`event` is required for track")
    else:
        name = message.get("name") if kind in ("page", "screen") else None
    if kind == "identify" and message.get("traits") is None:
        context = message.get("context")
        if isinstance(context, dict) and isinstance(context.get("traits"), dict):
            message["traits"] = context["traits"]

    message_id = message.get("messageId")
    if message_id is None or message_id == "":
        message_id = _generated_message_id()
        message["messageId"] = message_id
    elif not isinstance(message_id, str):
        raise _invalid(
            "messageId",
            "invalid_type",
            f"invalid `messageId` `{_show(message_id)}`: expected a string",
        )
    elif len(message_id) > limits.max_message_id_length:
        raise _invalid(
            "messageId",
            "too_long",
            f"`messageId` is {len(message_id)} characters long: "
            f"at most {limits.max_message_id_length} are allowed",
        )
    elif "\x00" in message_id:
        raise _invalid("messageId", "invalid_value", "`messageId` contains a NUL character")

    original = parse_timestamp(message.get("timestamp"), "timestamp")
    own_sent_at = parse_timestamp(message.get("sentAt"), "sentAt")
    sent = own_sent_at or sent_at
    if original is None:
        timestamp = received_at
    elif sent is None:
        timestamp = original
    else:
        # Correct the client's clock skew as Segment does, keeping the original timestamp.
        try:
            timestamp = received_at - (sent - original)
        except OverflowError as exc:
            raise _invalid(
                "timestamp", "invalid_timestamp", "`timestamp` and `sentAt` are too far apart"
            ) from exc
    # orjson writes datetimes as RFC 3339 itself, several times faster than isoformat().
    message["timestamp"] = timestamp
    message["originalTimestamp"] = original
    message["sentAt"] = sent
    message["receivedAt"] = received_at

    try:
        payload = orjson.dumps(message)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise _invalid("", "invalid_value", f"the message cannot be stored as JSON: {exc}") from exc
    # Fewer brackets than the limit cannot nest deeper than it: only then walk the tree.
    if payload.count(b"{") + payload.count(b"[") > limits.max_json_depth and _depth_exceeded(
        message, limits.max_json_depth
    ):
        raise _invalid(
            "",
            "too_deep",
            f"the message nests objects or arrays deeper than {limits.max_json_depth} levels",
        )
    if len(payload) > limits.max_event_bytes:
        raise PayloadTooLargeError(
            f"the message is {len(payload)} bytes as JSON: at most {limits.max_event_bytes} "
            "are allowed per event",
            field="",
            reason="too_large",
        )
    if b"\\u0000" in payload:
        path = _nul_path(message, "")
        if path:
            field = path.lstrip(".")
            raise _invalid(field, "invalid_value", f"`{field}` contains a NUL character")
    return EventRow(
        message_id=message_id,
        type=kind,
        event=name,
        user_id=user_id,
        anonymous_id=anonymous_id,
        timestamp=timestamp,
        original_timestamp=original,
        sent_at=sent,
        received_at=received_at,
        payload=payload.decode(),
    )
