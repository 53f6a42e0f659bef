"""CSV cells round-trip and never start a formula; encodings, line endings, quoting."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.errors import InvalidInputError
from closedloop.feeds import neutralise, unneutralise
from closedloop.feeds.definition import CsvFormat, JsonlFormat
from closedloop.feeds.formats import open_writer

_DANGEROUS = "=+-@\t\r\0'"
_NUMBER = re.compile(r"[+-]?(?:\d+(?:[.,]\d+)?|[.,]\d+)(?:[eE][+-]?\d{1,3})?")
_E164 = re.compile(r"\+[1-9]\d{1,14}")
_cells = st.one_of(
    st.text(max_size=30),
    st.builds(lambda a, b: a + b, st.sampled_from(list(_DANGEROUS)), st.text(max_size=20)),
    st.sampled_from(
        [
            "=SUM(A1:A9)",
            "+49 351 1",
            "+4935112345",
            "-12.5",
            "@cmd",
            '"quoted;";x',
            "a\nb",
            "\r\n",
            "'",
        ]
    ),
)


def _write(rows: list[list[Any]], fmt: CsvFormat) -> bytes:
    out = io.BytesIO()
    writer = open_writer(out, fmt, [f"c{i}" for i in range(len(rows[0]))] if rows else ["c0"])
    writer.write(rows)
    return out.getvalue()


def _read(data: bytes, fmt: CsvFormat) -> list[list[str]]:
    text = data.decode("utf-8-sig" if fmt.encoding != "cp1252" else "cp1252")
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=fmt.delimiter))


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.lists(_cells, min_size=3, max_size=3), min_size=1, max_size=8),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    quoting=st.sampled_from(["minimal", "all"]),
    line_ending=st.sampled_from(["crlf", "lf"]),
)
def test_cells_round_trip_and_never_start_a_formula(
    rows: list[list[str]], delimiter: str, quoting: str, line_ending: str
) -> None:
    fmt = CsvFormat(delimiter=delimiter, quoting=quoting, line_ending=line_ending)  # type: ignore[arg-type]
    read = _read(_write(rows, fmt), fmt)
    assert read[0] == ["c0", "c1", "c2"]
    assert len(read) == len(rows) + 1
    for original, cells in zip(rows, read[1:], strict=True):
        assert [unneutralise(c) for c in cells] == original
        for cell in cells:
            if cell and cell[0] in "=+-@\t\r\0":
                # only numbers and E.164 phone numbers keep such a first character
                assert _NUMBER.fullmatch(cell) or _E164.fullmatch(cell), cell


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("@SUM(1)", "'@SUM(1)"),
        ("+49 351 1234567", "'+49 351 1234567"),  # not validated E.164: neutralised
        ("+493511234567", "+493511234567"),  # E.164 stays usable
        ("-12.5", "-12.5"),
        ("-1+1", "'-1+1"),
        ("-\u0661\u0662", "'-\u0661\u0662"),  # other scripts' digits are no number
        ("+\u0664\u0669\u0663\u0665\u0661", "'+\u0664\u0669\u0663\u0665\u0661"),
        ("-1\n", "'-1\n"),  # a number is the whole cell
        ("\tx", "'\tx"),
        ("'quoted", "''quoted"),
        ("plain", "plain"),
        ("", ""),
    ],
)
def test_neutralise_examples(cell: str, written: str) -> None:
    assert neutralise(cell) == written
    assert unneutralise(written) == cell


def test_encodings_and_line_endings() -> None:
    rows = [["Müller", "01067"]]
    bom = _write(rows, CsvFormat(encoding="utf-8-sig"))
    assert bom.startswith(b"\xef\xbb\xbfc0,c1\r\n")
    lf = _write(rows, CsvFormat(line_ending="lf", quoting="all"))
    assert lf == b'"c0","c1"\n"M\xc3\xbcller","01067"\n'
    cp = _write(rows, CsvFormat(encoding="cp1252", delimiter=";"))
    assert cp == b"c0;c1\r\nM\xfcller;01067\r\n"


def test_unencodable_names_row_and_column() -> None:
    out = io.BytesIO()
    writer = open_writer(out, CsvFormat(encoding="cp1252"), ["name", "city"])
    writer.write([["Anna", "Köln"]])
    with pytest.raises(InvalidInputError) as caught:
        writer.write([["Bea", "Kraków"], ["Ćwik", "Łódź"]])
    assert caught.value.message.startswith("row 3, column `name`: `Ć` (U+0106)")
    assert caught.value.field == "format.encoding"


def test_values_as_text() -> None:
    from datetime import UTC, datetime

    data = _write([[None, True, 3, 2.5, 1.0, datetime(2026, 1, 2, tzinfo=UTC), ["a"]]], CsvFormat())
    line = data.decode().splitlines()[1]
    assert line == ',true,3,2.5,1,2026-01-02T00:00:00+00:00,"[""a""]"'


def test_jsonl_rows_are_objects() -> None:
    out = io.BytesIO()
    writer = open_writer(out, JsonlFormat(), ["a", "b"])
    writer.write([["=x", 1], [None, 2.5]])
    assert out.getvalue() == b'{"a":"=x","b":1}\n{"a":null,"b":2.5}\n'
    assert writer.rows == 2 and writer.bytes == len(out.getvalue())


_any_cells = st.one_of(
    _cells,
    st.sampled_from(["Müller", "Kraków", "01067", "", "a;b", 'x"y', "x\ry", None]),
    st.none(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)


def _both(rows: list[list[Any]], fmt: CsvFormat) -> list[tuple[bytes, Any]]:
    """What `write` and `write_columns` give for the same rows (in two chunks), with the
    writer's counts, or the error they raise."""
    found = []
    for by_columns in (False, True):
        out = io.BytesIO()
        writer = open_writer(out, fmt, [f"c{i}" for i in range(len(rows[0]))])
        try:
            for chunk in (rows[:2], rows[2:]):
                if not chunk:
                    continue
                if by_columns:
                    writer.write_columns([list(c) for c in zip(*chunk, strict=True)])
                else:
                    writer.write(chunk)
        except InvalidInputError as exc:
            found.append((out.getvalue(), exc.message))
        else:
            found.append((out.getvalue(), (writer.rows, writer.bytes, writer.sha256)))
    return found


@settings(max_examples=400, deadline=None)
@given(
    width=st.integers(1, 4),
    cells=st.lists(_any_cells, min_size=16, max_size=16),
    plain=st.booleans(),
    height=st.integers(1, 4),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    quoting=st.sampled_from(["minimal", "all"]),
    line_ending=st.sampled_from(["crlf", "lf"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "cp1252"]),
)
def test_columns_are_written_as_the_same_rows_would_be(
    width: int,
    cells: list[Any],
    plain: bool,
    height: int,
    delimiter: str,
    quoting: str,
    line_ending: str,
    encoding: str,
) -> None:
    """Whole columns joined at once (where no cell needs quotes) give the bytes, counts and
    errors that the csv module gives row by row."""
    if plain:  # mostly cells that need no quotes: the joined path
        cells = [c if not isinstance(c, str) or c.isalnum() else "x" for c in cells]
    rows = [cells[r * width : (r + 1) * width] for r in range(height)]
    fmt = CsvFormat(
        delimiter=delimiter,
        quoting=quoting,  # type: ignore[arg-type]
        line_ending=line_ending,  # type: ignore[arg-type]
        encoding=encoding,  # type: ignore[arg-type]
    )
    by_rows, by_columns = _both(rows, fmt)
    assert by_columns == by_rows


def test_plain_columns_keep_numbers_and_phone_numbers_and_neutralise_formulas() -> None:
    rows = [["+4935112345", "-12.5", "=SUM(A1)", None, 7], ["+49 351", "Müller", "'x", "", 2.5]]
    fmt = CsvFormat(delimiter=";", line_ending="lf")
    (data, _), same = _both(rows, fmt)
    assert same[0] == data
    assert data.decode().splitlines()[1:] == [
        "+4935112345;-12.5;'=SUM(A1);;7",
        "'+49 351;Müller;''x;;2.5",
    ]
