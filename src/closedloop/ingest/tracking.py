"""From a parsed tracking body to event-log rows: one bad event never sinks a batch."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from closedloop.config import IngestSettings
from closedloop.errors import InvalidInputError, PayloadTooLargeError
from closedloop.ingest import log
from closedloop.ingest.messages import normalise_message, parse_timestamp

__all__ = ["Prepared", "Rejection", "prepare", "write_key_from_body"]


@dataclass(frozen=True)
class Rejection:
    """One message that was not stored, and why."""

    index: int
    message_id: str | None
    field: str | None
    reason: str
    code: str

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "messageId": self.message_id,
            "field": self.field,
            "reason": self.reason,
            "code": self.code,
        }


@dataclass(frozen=True)
class Prepared:
    """Rows ready for the log, rows for failed_events, and what to tell the caller."""

    rows: list[tuple[Any, ...]]
    row_indexes: list[int]  # the message index (in the batch) of each row
    failed_rows: list[tuple[Any, ...]]
    rejections: list[Rejection]


def write_key_from_body(body: Any) -> str | None:
    if isinstance(body, dict):
        key = body.get("writeKey")
        if isinstance(key, str) and key:
            return key
    return None


def _batch_items(body: Any, limits: IngestSettings) -> tuple[list[Any], dict[str, Any]]:
    if not isinstance(body, dict):
        raise InvalidInputError(
            'expected a JSON object `{"batch": [...]}`', field="body", reason="invalid_type"
        )
    items = body.get("batch")
    if items is None:
        raise InvalidInputError(
            '`batch` is required: send `{"batch": [messages...]}`',
            field="batch",
            reason="missing_field",
        )
    if not isinstance(items, list):
        raise InvalidInputError(
            "invalid `batch`: expected an array of messages", field="batch", reason="invalid_type"
        )
    if len(items) > limits.max_batch_events:
        raise PayloadTooLargeError(
            f"`batch` has {len(items)} messages: at most {limits.max_batch_events} are allowed; "
            "send smaller batches",
            field="batch",
            reason="too_large",
        )
    return items, body


def prepare(
    body: Any,
    *,
    call_type: str,
    source_id: int,
    limits: IngestSettings,
    received_at: datetime,
    origin: str,
) -> Prepared:
    """Validate a tracking body (`call_type` `batch` or one of the six call types).

    A single call raises `InvalidInputError` for a bad message (after which the caller stores
    a failed row made with `log.failed_row`); a batch never raises for a bad
    message: it is listed in `rejections` and kept in `failed_rows`.
    """
    if call_type != "batch":
        if not isinstance(body, dict):
            raise InvalidInputError(
                "expected a JSON object for the message", field="body", reason="invalid_type"
            )
        row = normalise_message(
            body, call_type=call_type, limits=limits, received_at=received_at, sent_at=None
        )
        return Prepared([row.as_tuple(source_id)], [0], [], [])

    items, envelope = _batch_items(body, limits)
    envelope_sent_at = parse_timestamp(envelope.get("sentAt"), "sentAt")
    shared_context = envelope.get("context")
    shared_integrations = envelope.get("integrations")
    rows: list[tuple[Any, ...]] = []
    failed_rows: list[tuple[Any, ...]] = []
    row_indexes: list[int] = []
    rejections: list[Rejection] = []
    for index, item in enumerate(items):
        if isinstance(item, dict):
            if isinstance(shared_context, dict):
                own = item.get("context")
                item["context"] = (
                    {**shared_context, **own}
                    if isinstance(own, dict)
                    else (own if own is not None else dict(shared_context))
                )
            if isinstance(shared_integrations, dict) and item.get("integrations") is None:
                item["integrations"] = shared_integrations
        try:
            row = normalise_message(
                item,
                call_type=None,
                limits=limits,
                received_at=received_at,
                sent_at=envelope_sent_at,
            )
        except InvalidInputError as exc:
            message_id = item.get("messageId") if isinstance(item, dict) else None
            rejections.append(
                Rejection(
                    index=index,
                    message_id=str(message_id)[:100] if message_id is not None else None,
                    field=exc.field,
                    reason=exc.message,
                    code=exc.reason,
                )
            )
            failed_rows.append(
                log.failed_row(
                    source_id=source_id,
                    origin=f"{origin}[{index}]",
                    message=item,
                    field=exc.field,
                    reason=exc.message,
                    received_at=received_at,
                )
            )
            continue
        rows.append(row.as_tuple(source_id))
        row_indexes.append(index)
    return Prepared(rows, row_indexes, failed_rows, rejections)
