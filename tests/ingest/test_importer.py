"""File imports: JSONL and CSV, same validation and dedupe as the tracking API."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sqlalchemy.engine import Engine

from closedloop import ingest
from closedloop.config import IngestSettings, Settings
from closedloop.errors import InvalidInputError
from closedloop.ingest.importer import CsvMapping, import_file, load_mapping
from closedloop.profiles import process_through
from closedloop.profiles.read import find_profile, timeline
from tests.helpers import failed, stored

LIMITS = IngestSettings()


@pytest.fixture
def pos(engine: Engine) -> ingest.Source:
    return ingest.add_source(engine, "pos", kind="pos").source


def _jsonl(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_import_jsonl_stores_good_lines_and_names_bad_ones(
    engine: Engine, pos: ingest.Source, tmp_path: Path
) -> None:
    good = {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "m1"}
    no_id = {"type": "identify", "userId": "u2", "traits": {"email": "a@example.com"}}
    lines = [
        orjson.dumps(good),
        b"{not json",
        orjson.dumps({"type": "track", "userId": "u3"}),  # no event
        b"",
        orjson.dumps(no_id),
        orjson.dumps({"type": "fax", "userId": "u4"}),
    ]
    report = import_file(
        engine, _jsonl(tmp_path / "e.jsonl", lines), source=pos, limits=LIMITS, fmt="jsonl"
    )
    assert (report.accepted, report.duplicates, report.rejected) == (2, 0, 3)
    assert [(r.line, r.field) for r in report.rejections] == [
        (2, ""),
        (3, "event"),
        (6, "type"),
    ]
    assert "malformed JSON" in report.rejections[0].reason
    rows = stored(engine)
    assert [r["user_id"] for r in rows] == ["u1", "u2"]
    assert rows[1]["message_id"].startswith("imp-")  # derived from the line, stable
    assert [f["origin"] for f in failed(engine)] == [
        "import:e.jsonl:2",
        "import:e.jsonl:3",
        "import:e.jsonl:6",
    ]


def test_reimport_stores_nothing_twice(engine: Engine, pos: ingest.Source, tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "again.jsonl",
        [orjson.dumps({"type": "page", "anonymousId": f"a{i}", "name": "Home"}) for i in range(50)],
    )
    first = import_file(engine, path, source=pos, limits=LIMITS, fmt="jsonl", batch_size=7)
    second = import_file(engine, path, source=pos, limits=LIMITS, fmt="jsonl", batch_size=7)
    assert (first.accepted, first.duplicates) == (50, 0)
    assert (second.accepted, second.duplicates) == (0, 50)
    assert len(stored(engine)) == 50


def test_oversized_jsonl_line_is_rejected_without_losing_the_next(
    engine: Engine, pos: ingest.Source, tmp_path: Path
) -> None:
    huge = {"type": "track", "event": "Big", "userId": "u", "properties": {"x": "y" * 200_000}}
    path = _jsonl(
        tmp_path / "big.jsonl",
        [orjson.dumps(huge), orjson.dumps({"type": "track", "event": "Small", "userId": "u"})],
    )
    report = import_file(engine, path, source=pos, limits=LIMITS, fmt="jsonl")
    assert (report.accepted, report.rejected) == (1, 1)
    assert report.rejections[0].line == 1
    assert "bytes" in report.rejections[0].reason
    assert [r["event"] for r in stored(engine)] == ["Small"]


POS_CSV = (
    "receipt;customer;amount;store;booked\n"
    "R1;c-100;129,95;Dresden;22.11.2026 10:15\n"
    "R2;c-101;not-a-number;Berlin;22.11.2026 11:00\n"
    "R3;;19,90;Berlin;22.11.2026 12:30\n"
    "R4;c-102;5,00;Leipzig;2026-99-99\n"
)


def _pos_mapping(tmp_path: Path) -> Path:
    mapping = tmp_path / "pos.yaml"
    mapping.write_text(
        "type: track\n"
        "event: Order Completed\n"
        "user_id: customer\n"
        "message_id: receipt\n"
        "timestamp: booked\n"
        "timestamp_format: '%d.%m.%Y %H:%M'\n"
        "timezone: Europe/Berlin\n"
        "delimiter: ';'\n"
        "properties:\n"
        "  revenue: {column: amount, type: number}\n"
        "  store: store\n",
        encoding="utf-8",
    )
    return mapping


def test_import_csv_with_mapping_converts_and_reports_rows(
    engine: Engine, pos: ingest.Source, tmp_path: Path
) -> None:
    path = tmp_path / "pos.csv"
    path.write_text(POS_CSV, encoding="utf-8")
    mapping = load_mapping(_pos_mapping(tmp_path))
    report = import_file(engine, path, source=pos, limits=LIMITS, fmt="csv", mapping=mapping)
    assert (report.accepted, report.rejected) == (1, 3)
    assert [(r.line, r.field) for r in report.rejections] == [
        (3, "properties.revenue"),
        (4, "userId"),
        (5, "timestamp"),
    ]
    (row,) = stored(engine)
    assert row["message_id"] == "R1"
    payload = row["payload"] if isinstance(row["payload"], dict) else orjson.loads(row["payload"])
    assert payload["properties"] == {"revenue": 129.95, "store": "Dresden"}
    # 10:15 in Berlin (CET) is 09:15 UTC
    assert row["timestamp"].isoformat() == "2026-11-22T09:15:00+00:00"


def test_csv_in_cp1252_is_read_with_the_named_encoding(
    engine: Engine, pos: ingest.Source, tmp_path: Path
) -> None:
    path = tmp_path / "calls.csv"
    path.write_bytes("caller,topic\nc-1,Beschwerde über Lieferung\n".encode("cp1252"))
    utf8 = CsvMapping(
        type="track", event="Call Logged", user_id="caller", properties={"t": "topic"}
    )
    with pytest.raises(InvalidInputError) as wrong:
        import_file(engine, path, source=pos, limits=LIMITS, fmt="csv", mapping=utf8)
    assert wrong.value.field == "encoding"
    right = utf8.model_copy(update={"encoding": "cp1252"})
    report = import_file(engine, path, source=pos, limits=LIMITS, fmt="csv", mapping=right)
    assert report.accepted == 1
    payload = stored(engine)[0]["payload"]
    payload = payload if isinstance(payload, dict) else orjson.loads(payload)
    assert payload["properties"]["t"] == "Beschwerde über Lieferung"


def test_csv_missing_mapped_column_is_named(
    engine: Engine, pos: ingest.Source, tmp_path: Path
) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(InvalidInputError) as missing:
        import_file(
            engine, path, source=pos, limits=LIMITS, fmt="csv", mapping=CsvMapping(user_id="email")
        )
    assert "`email`" in missing.value.message


def test_bad_mapping_file_names_the_key(tmp_path: Path) -> None:
    mapping = tmp_path / "bad.yaml"
    mapping.write_text("type: track\ntimezone: Mars/Olympus\n", encoding="utf-8")
    with pytest.raises(InvalidInputError) as bad:
        load_mapping(mapping)
    assert bad.value.field == "timezone"
    mapping.write_text("type: track\nunknown_key: 1\n", encoding="utf-8")
    with pytest.raises(InvalidInputError) as extra:
        load_mapping(mapping)
    assert extra.value.field == "unknown_key"
    mapping.write_bytes(b"type: track\nevent: Anruf " + "für".encode("cp1252"))
    with pytest.raises(InvalidInputError) as binary:
        load_mapping(mapping)
    assert binary.value.message == (
        f"cannot read mapping `{mapping}`: not UTF-8 text (invalid start byte at byte 26)"
    )
    mapping.write_text("- type: track\n", encoding="utf-8")
    with pytest.raises(InvalidInputError) as listed:
        load_mapping(mapping)
    assert listed.value.message == (
        f"invalid mapping `{mapping}`: expected keys such as `type:` and `user_id:`"
    )


def test_missing_file_is_a_clear_error(engine: Engine, pos: ingest.Source, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as missing:
        import_file(engine, tmp_path / "nope.jsonl", source=pos, limits=LIMITS, fmt="jsonl")
    assert "nope.jsonl" in missing.value.message


CALLS_CSV = (
    "call;caller;reason;at\n"
    "C1;0351/1234567;complaint;22.11.2026 10:00\n"
    "C2;0170 9999999;question;22.11.2026 11:00\n"
    "C3;0351/1234567;cancellation;23.11.2026 09:30\n"
)


def test_call_center_log_known_by_phone_joins_the_caller(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    """A call-center log knows the caller by the number she called from, written its own
    way: the mapped traits of a track go to `context.traits`, where identity resolution
    reads the phone, and the call lands on the customer who gave that number at the shop."""
    shop = ingest.add_source(engine, "shop", kind="web").source
    calls = ingest.add_source(engine, "calls", kind="callcenter").source
    known = tmp_path / "shop.jsonl"
    known.write_text(
        '{"type": "identify", "userId": "c-7", "timestamp": "2026-11-20T09:00:00Z", '
        '"traits": {"email": "erika@example.com", "phone": "+49 351 1234567"}}\n',
        encoding="utf-8",
    )
    import_file(engine, known, source=shop, limits=LIMITS, fmt="jsonl")
    mapping = tmp_path / "calls.yaml"
    mapping.write_text(
        "type: track\n"
        "event: Call Logged\n"
        "anonymous_id: caller\n"
        "timestamp: at\n"
        "timestamp_format: '%d.%m.%Y %H:%M'\n"
        "timezone: Europe/Berlin\n"
        "delimiter: ';'\n"
        "properties: {reason: reason}\n"
        "traits: {phone: caller}\n"
        "context: {channel: callcenter}\n",
        encoding="utf-8",
    )
    path = tmp_path / "calls.csv"
    path.write_text(CALLS_CSV, encoding="utf-8")
    report = import_file(
        engine, path, source=calls, limits=LIMITS, fmt="csv", mapping=load_mapping(mapping)
    )
    assert (report.accepted, report.rejected) == (3, 0)
    payload = stored(engine)[2]["payload"]
    payload = payload if isinstance(payload, dict) else orjson.loads(payload)
    assert "traits" not in payload
    assert payload["context"] == {"channel": "callcenter", "traits": {"phone": "0170 9999999"}}

    process_through(engine, settings)
    region = settings.identity.default_region
    purposes = settings.profiles.consent_purposes
    erika = find_profile(engine, "email", "erika@example.com", region=region, purposes=purposes)
    assert erika is not None
    by_phone = find_profile(engine, "phone", "0351 1234567", region=region, purposes=purposes)
    assert by_phone is not None and by_phone.id == erika.id
    _, events = timeline(engine, erika.id, before_id=None, limit=10)
    assert [(e.event, e.payload["properties"]["reason"]) for e in events if e.type == "track"] == [
        ("Call Logged", "cancellation"),
        ("Call Logged", "complaint"),
    ]
    assert by_phone.document["computed"]["channels"] == ["callcenter", "web"]
    # One anonymous id for her number, however often she calls.
    anonymous = [i for i in by_phone.document["identities"] if i["kind"] == "anonymous_id"]
    assert [i["value"] for i in anonymous] == ["0351/1234567"]
    # A caller the shop does not know is a profile of her own, found by her number.
    stranger = find_profile(engine, "phone", "+49 170 9999999", region=region, purposes=purposes)
    assert stranger is not None and stranger.id != erika.id
