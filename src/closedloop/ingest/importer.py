"""File imports: JSONL of Segment messages, and CSV with a column mapping.

Both stream (a line or a row at a time, committed in batches), validate and dedupe exactly
like the tracking API, and report every rejected line with its number and reason. A message
without `messageId` gets one derived from the source and the line's content, so importing
the same file again stores nothing twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from sqlalchemy.engine import Engine

from closedloop import clock
from closedloop.config import IngestSettings
from closedloop.errors import InvalidInputError
from closedloop.ingest import log
from closedloop.ingest.messages import normalise_message
from closedloop.ingest.sources import Source

__all__ = ["ColumnSpec", "CsvMapping", "ImportReport", "import_file", "load_mapping"]

_MAX_LISTED = 1000


class ColumnSpec(BaseModel):
    """A value taken from a CSV column, converted to `type`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    column: str
    type: Literal["string", "number", "integer", "boolean"] = "string"


class CsvMapping(BaseModel):
    """How CSV columns become a Segment message."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["identify", "track", "page", "screen", "group"] = "track"
    event: str | None = None
    event_column: str | None = None
    name_column: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    group_id: str | None = None
    message_id: str | None = None
    timestamp: str | None = None
    timestamp_format: str | None = None
    timezone: str = "UTC"
    delimiter: str = ","
    encoding: Literal["utf-8", "utf-8-sig", "cp1252", "latin-1"] = "utf-8-sig"
    properties: dict[str, str | ColumnSpec] = {}
    traits: dict[str, str | ColumnSpec] = {}
    context: dict[str, str] = {}

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone `{value}`: use an IANA name such as `Europe/Berlin`"
            ) from exc
        return value

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError("`delimiter` must be one character, e.g. `;`")
        return value

    def columns(self) -> set[str]:
        used = {
            c
            for c in (
                self.event_column,
                self.name_column,
                self.user_id,
                self.anonymous_id,
                self.group_id,
                self.message_id,
                self.timestamp,
            )
            if c
        }
        for spec in (*self.properties.values(), *self.traits.values()):
            used.add(spec if isinstance(spec, str) else spec.column)
        return used


def load_mapping(path: Path) -> CsvMapping:
    """Read a mapping from YAML or JSON, with errors that name the key."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"cannot read mapping `{path}`: not UTF-8 text ({exc.reason} at byte {exc.start})",
            field="mapping",
        ) from exc
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInputError(f"cannot read mapping `{path}`: {exc}", field="mapping") from exc
    try:
        return CsvMapping.model_validate(data or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        if not where:  # the document itself: a list or a text, not keys
            raise InvalidInputError(
                f"invalid mapping `{path}`: expected keys such as `type:` and `user_id:`",
                field="mapping",
            ) from exc
        raise InvalidInputError(
            f"invalid mapping `{path}`: `{where}`: {first['msg']}", field=where
        ) from exc


@dataclass(frozen=True)
class RejectedLine:
    line: int
    field: str | None
    reason: str


@dataclass
class ImportReport:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejections: list[RejectedLine] = field(default_factory=list)

    def reject(self, line: int, error: InvalidInputError) -> None:
        self.rejected += 1
        if len(self.rejections) < _MAX_LISTED:
            self.rejections.append(RejectedLine(line, error.field, error.message))


def _derived_id(source: Source, content: bytes) -> str:
    digest = hashlib.sha256(source.name.encode() + b"\x00" + content).hexdigest()
    return "imp-" + digest[:40]


_Lines = Generator[tuple[int, Any, InvalidInputError | None], None, None]


def _jsonl_messages(stream: BinaryIO, source: Source, limits: IngestSettings) -> _Lines:
    line_no = 0
    cap = limits.max_event_bytes * 2
    while True:
        line = stream.readline(cap + 1)
        if not line:
            return
        line_no += 1
        if len(line) > cap and not line.endswith(b"\n"):
            while True:  # skip the rest of an oversized line without holding it
                more = stream.readline(cap)
                if not more or more.endswith(b"\n"):
                    break
            yield (
                line_no,
                None,
                InvalidInputError(
                    f"line is over {cap} bytes: at most {limits.max_event_bytes} per event",
                    field="",
                    reason="too_large",
                ),
            )
            continue
        if not line.strip():
            continue
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield (
                line_no,
                None,
                InvalidInputError(f"malformed JSON: {exc}", field="", reason="malformed_json"),
            )
            continue
        if isinstance(message, dict) and not message.get("messageId"):
            message["messageId"] = _derived_id(source, line.strip())
        yield line_no, message, None


def _convert(value: str, spec: ColumnSpec, name: str) -> Any:
    if spec.type == "string":
        return value
    try:
        if spec.type == "integer":
            return int(value)
        if spec.type == "number":
            return (
                float(value.replace(",", "."))
                if "," in value and "." not in value
                else float(value)
            )
    except ValueError as exc:
        raise InvalidInputError(
            f"invalid `{name}` `{value[:40]}` (column `{spec.column}`): expected a {spec.type}",
            field=name,
            reason="invalid_value",
        ) from exc
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "1", "ja", "y"):
        return True
    if lowered in ("false", "no", "0", "nein", "n"):
        return False
    raise InvalidInputError(
        f"invalid `{name}` `{value[:40]}` (column `{spec.column}`): expected true or false",
        field=name,
        reason="invalid_value",
    )


def _csv_timestamp(value: str, mapping: CsvMapping) -> str:
    zone = ZoneInfo(mapping.timezone)
    try:
        parsed = (
            datetime.strptime(value, mapping.timestamp_format)  # noqa: DTZ007 - zone below
            if mapping.timestamp_format
            else datetime.fromisoformat(value)
        )
    except ValueError as exc:
        expected = f"`{mapping.timestamp_format}`" if mapping.timestamp_format else "ISO-8601"
        raise InvalidInputError(
            f"invalid `timestamp` `{value[:40]}` (column `{mapping.timestamp}`): "
            f"expected {expected}",
            field="timestamp",
            reason="invalid_timestamp",
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC).isoformat()


def _csv_message(row: dict[str, str], mapping: CsvMapping) -> dict[str, Any]:
    def cell(column: str | None) -> str | None:
        if column is None:
            return None
        value = row.get(column)
        return value if value not in (None, "") else None

    message: dict[str, Any] = {"type": mapping.type}
    for key, column in (
        ("userId", mapping.user_id),
        ("anonymousId", mapping.anonymous_id),
        ("groupId", mapping.group_id),
        ("messageId", mapping.message_id),
    ):
        value = cell(column)
        if value is not None:
            message[key] = value
    if mapping.type == "track":
        message["event"] = cell(mapping.event_column) or mapping.event
    elif mapping.type in ("page", "screen"):
        message["name"] = cell(mapping.name_column) or mapping.event
    stamp = cell(mapping.timestamp)
    if stamp is not None:
        message["timestamp"] = _csv_timestamp(stamp, mapping)
    if mapping.context:
        message["context"] = dict(mapping.context)
    for target, specs in (("properties", mapping.properties), ("traits", mapping.traits)):
        values: dict[str, Any] = {}
        for name, raw_spec in specs.items():
            spec = ColumnSpec(column=raw_spec) if isinstance(raw_spec, str) else raw_spec
            value = cell(spec.column)
            if value is not None:
                values[name] = _convert(value, spec, f"{target}.{name}")
        if not values:
            continue
        if target == "traits" and mapping.type not in _OWN_TRAITS:
            # The customer's traits on a track, page or screen: in `context.traits`, where
            # Segment's calls carry them and identity resolution reads e-mail and phone (a
            # call-center log known by the caller's phone number joins her profile).
            message.setdefault("context", {})["traits"] = values
        else:
            message[target] = values
    return message


# The calls whose `traits` are their own (a customer's in identify, a group's in group).
_OWN_TRAITS = frozenset(("identify", "group"))


def _csv_messages(stream: BinaryIO, source: Source, mapping: CsvMapping) -> _Lines:
    text = io.TextIOWrapper(stream, encoding=mapping.encoding, newline="")
    try:
        yield from _csv_rows(text, source, mapping)
    finally:
        text.detach()  # the caller owns and closes the file


def _csv_rows(
    text: io.TextIOWrapper, source: Source, mapping: CsvMapping
) -> Iterator[tuple[int, Any, InvalidInputError | None]]:
    reader = csv.DictReader(text, delimiter=mapping.delimiter)
    try:
        header = reader.fieldnames or []
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"the header is not `{mapping.encoding}`: set `encoding` in the mapping",
            field="encoding",
        ) from exc
    missing = sorted(mapping.columns() - set(header))
    if missing:
        raise InvalidInputError(
            f"the file has no column(s) {', '.join(f'`{c}`' for c in missing)}; "
            f"it has {', '.join(f'`{c}`' for c in header[:30])}",
            field="mapping",
        )
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                f"line {reader.line_num + 1} is not `{mapping.encoding}`: set `encoding`",
                field="encoding",
            ) from exc
        except csv.Error as exc:
            yield (
                reader.line_num,
                None,
                InvalidInputError(f"malformed CSV: {exc}", field="", reason="malformed_csv"),
            )
            continue
        line_no = reader.line_num
        if None in row:
            yield (
                line_no,
                None,
                InvalidInputError(
                    "the row has more cells than the header", field="", reason="malformed_csv"
                ),
            )
            continue
        try:
            message = _csv_message(row, mapping)
        except InvalidInputError as exc:
            yield line_no, dict(row), exc
            continue
        if "messageId" not in message:
            canonical = orjson.dumps(row, option=orjson.OPT_SORT_KEYS)
            message["messageId"] = _derived_id(source, canonical)
        yield line_no, message, None


def import_file(
    engine: Engine,
    path: Path,
    *,
    source: Source,
    limits: IngestSettings,
    fmt: Literal["jsonl", "csv"],
    mapping: CsvMapping | None = None,
    batch_size: int = 1000,
) -> ImportReport:
    """Import `path` into the event log in batches of `batch_size` lines."""
    if fmt == "csv" and mapping is None:
        mapping = CsvMapping()
    report = ImportReport()
    origin = f"import:{path.name}"
    rows: list[tuple[Any, ...]] = []
    failed: list[tuple[Any, ...]] = []

    def flush() -> None:
        if not rows and not failed:
            return
        with engine.begin() as conn:
            inserted = log.append(conn, rows, failed)
        report.accepted += inserted
        report.duplicates += len(rows) - inserted
        rows.clear()
        failed.clear()

    try:
        stream = path.open("rb")
    except OSError as exc:
        raise InvalidInputError(f"cannot open `{path}`: {exc.strerror}", field="file") from exc
    with (
        stream,
        closing(
            _jsonl_messages(stream, source, limits)
            if fmt == "jsonl"
            else _csv_messages(stream, source, mapping or CsvMapping())
        ) as messages,
    ):
        for line_no, message, error in messages:
            received_at = clock.now()
            if error is None:
                try:
                    row = normalise_message(
                        message,
                        call_type=None,
                        limits=limits,
                        received_at=received_at,
                        sent_at=None,
                    )
                    rows.append(row.as_tuple(source.id))
                except InvalidInputError as exc:
                    error = exc
            if error is not None:
                report.reject(line_no, error)
                failed.append(
                    log.failed_row(
                        source_id=source.id,
                        origin=f"{origin}:{line_no}",
                        message=message,
                        field=error.field,
                        reason=error.message,
                        received_at=received_at,
                    )
                )
            if len(rows) + len(failed) >= batch_size:
                flush()
        flush()
    return report
