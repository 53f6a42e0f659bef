"""File formats of a feed: CSV (delimiter, quoting, header, line ending, encoding) and JSONL.

Writers take rows of cells as the columns made them and write them to a binary file as they
come (flat memory), counting bytes and computing the SHA-256 on the way.

CSV cells that a spreadsheet would run as a formula (a first character of `= + - @`, tab,
carriage return or NUL) get a leading `'` (OWASP's advice), except numbers and E.164 phone
numbers (`+4935112345`), which a CRM needs as they are. A cell that starts with `'` gets one
more, so `unneutralise` gives every original value back. A character the encoding cannot
write (cp1252 has no `ł`) stops the run with the row and column named.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, BinaryIO

import orjson

from closedloop.errors import InvalidInputError
from closedloop.feeds.definition import CsvFormat, JsonlFormat

__all__ = [
    "EncodingProblemError",
    "FileWriter",
    "cell_text",
    "neutralise",
    "open_writer",
    "unneutralise",
]

_FORMULA_START = frozenset("=+-@\t\r\0'")
# (one pass over a column's cells joined by line breaks; a literal first character lets the
# regex engine skip to each break)
_FORMULA_AFTER_BREAK = re.compile("\n[" + re.escape("".join(sorted(_FORMULA_START))) + "]")
# ASCII digits only (`\d` alone also takes `١٢` and other scripts' digits, which no
# spreadsheet reads as a number), the whole cell (`$` alone allows a final line break).
_NUMBER = re.compile(r"[+-]?(?:\d+(?:[.,]\d+)?|[.,]\d+)(?:[eE][+-]?\d{1,3})?", re.ASCII)
_E164 = re.compile(r"\+[1-9]\d{1,14}", re.ASCII)


def neutralise(cell: str) -> str:
    """`=SUM(A1)` -> `'=SUM(A1)`; numbers and E.164 numbers stay as they are."""
    if (
        cell
        and cell[0] in _FORMULA_START
        and not _NUMBER.fullmatch(cell)
        and not _E164.fullmatch(cell)
    ):
        return "'" + cell
    return cell


def unneutralise(cell: str) -> str:
    """The original value of a neutralised cell (what a careful importer does)."""
    if len(cell) >= 2 and cell[0] == "'" and cell[1] in _FORMULA_START:
        return cell[1:]
    return cell


def cell_text(value: Any) -> str:
    """A cell's text: empty for none, `true`/`false`, ISO 8601 for times, JSON for lists."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value != int(value) or abs(value) >= 1e15 else str(int(value))
    if isinstance(value, datetime):
        return value.isoformat()
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


class EncodingProblemError(InvalidInputError):
    """A cell the file's encoding cannot write: `row` (1-based, None for the header), the
    column and the character, so a file written in parts can name the row of the whole."""

    def __init__(self, encoding: str, row: int | None, column: str, char: str) -> None:
        where = "the header" if row is None else f"row {row}"
        super().__init__(
            f"{where}, column `{column}`: `{char}` (U+{ord(char):04X}) cannot be written in "
            f"{encoding}; use `encoding: utf-8` or `utf-8-sig`, or correct the value",
            field="format.encoding",
        )
        self.encoding, self.row, self.column, self.char = encoding, row, column, char

    def __reduce__(self) -> Any:  # (pickled from a worker process to the run's)
        return (type(self), (self.encoding, self.row, self.column, self.char))

    def after(self, rows: int) -> EncodingProblemError:
        """The same problem in a file that has `rows` rows before this one's."""
        row = None if self.row is None else self.row + rows
        return EncodingProblemError(self.encoding, row, self.column, self.char)


class FileWriter:
    """Writes rows to `out`; `bytes` and `sha256` describe what was written."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.bytes = 0
        self.rows = 0
        self._hash = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def _emit(self, data: bytes) -> None:
        self._out.write(data)
        self._hash.update(data)
        self.bytes += len(data)

    def header(self, names: Sequence[str]) -> None:
        raise NotImplementedError

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def write_columns(self, columns: Sequence[Sequence[Any]]) -> None:
        """The same rows as `write`, given column by column (one list of cells a column)."""
        self.write(list(zip(*columns, strict=True)))

    def append(self, part: BinaryIO, *, rows: int) -> None:
        """The `rows` another writer of the same format wrote to `part` (`part=True`)."""
        while data := part.read(1 << 20):
            self._emit(data)
        self.rows += rows


class _CsvWriter(FileWriter):
    def __init__(
        self, out: BinaryIO, fmt: CsvFormat, names: Sequence[str], *, part: bool = False
    ) -> None:
        super().__init__(out)
        self._fmt = fmt
        self._names = list(names)
        self._buffer = io.StringIO()
        self._lf = fmt.line_ending == "lf" and fmt.quoting != "all"
        self._csv = csv.writer(
            self._buffer,
            delimiter=fmt.delimiter,
            quoting=csv.QUOTE_ALL if fmt.quoting == "all" else csv.QUOTE_MINIMAL,
            lineterminator="\r\n" if fmt.line_ending == "crlf" else "\n",
        )
        # With `\n` line endings the csv module leaves a lone `\r` unquoted, which readers
        # take for a line break: rows with one are written with every cell quoted.
        self._quoted = csv.writer(
            self._buffer, delimiter=fmt.delimiter, quoting=csv.QUOTE_ALL, lineterminator="\n"
        )
        self._encoding = "utf-8" if fmt.encoding == "utf-8-sig" else fmt.encoding
        if fmt.encoding == "utf-8-sig" and not part:
            self._emit(b"\xef\xbb\xbf")

    def header(self, names: Sequence[str]) -> None:
        self._csv.writerow([neutralise(n) for n in names])
        self._flush(None, [list(names)])

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        danger = _FORMULA_START
        text_rows = [
            [
                (v if not v or v[0] not in danger else neutralise(v))
                if type(v) is str
                else ("" if v is None else neutralise(cell_text(v)))
                for v in row
            ]
            for row in rows
        ]
        if self._lf:
            start = 0
            for index, row in enumerate(text_rows):
                if any("\r" in cell for cell in row):
                    self._csv.writerows(text_rows[start:index])
                    self._quoted.writerow(row)
                    start = index + 1
            self._csv.writerows(text_rows[start:])
        else:
            self._csv.writerows(text_rows)
        self._flush(self.rows, text_rows)
        self.rows += len(rows)

    def write_columns(self, columns: Sequence[Sequence[Any]]) -> None:
        """Whole columns at a time: where no cell needs quotes, the csv module would write
        exactly the cells joined by the delimiter, so they are joined in one step instead of
        cell by cell. A chunk with a cell to quote goes through `write`."""
        texts = _plain_columns(columns, self._fmt)
        if texts is None:
            super().write_columns(columns)
            return
        end = "\r\n" if self._fmt.line_ending == "crlf" else "\n"
        text = end.join(map(self._fmt.delimiter.join, zip(*texts, strict=True))) + end
        try:
            data = text.encode(self._encoding)
        except UnicodeEncodeError:
            rows = [list(row) for row in zip(*texts, strict=True)]
            raise self._locate(self.rows, rows) from None
        self._emit(data)
        self.rows += len(texts[0])

    def _flush(self, first_row: int | None, rows: list[list[str]]) -> None:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        try:
            data = text.encode(self._encoding)
        except UnicodeEncodeError:
            raise self._locate(first_row, rows) from None
        self._emit(data)

    def _locate(self, first_row: int | None, rows: list[list[str]]) -> InvalidInputError:
        for index, row in enumerate(rows):
            for column, cell in enumerate(row):
                try:
                    cell.encode(self._encoding)
                except UnicodeEncodeError as exc:
                    return EncodingProblemError(
                        self._fmt.encoding,
                        None if first_row is None else first_row + index + 1,
                        self._names[column],
                        cell[exc.start],
                    )
        return InvalidInputError(f"cannot encode in {self._fmt.encoding}", field="format.encoding")


def _plain_columns(columns: Sequence[Sequence[Any]], fmt: CsvFormat) -> list[Sequence[str]] | None:
    """The cells as `write` makes them (text, formulas neutralised), column by column; None
    where the csv module would quote one (it holds a quote, the delimiter or a line break)
    or the format quotes every cell (a row of one empty cell is quoted too: one column is
    left to the csv module)."""
    count = len(columns[0]) if columns else 0
    if fmt.quoting == "all" or len(columns) < 2 or count == 0:
        return None
    # What a cell may not hold (beside a line break): what the csv module would quote, and a
    # lone `\r`, which `write` quotes.
    forbidden = (fmt.delimiter, '"', "\r")
    texts: list[Sequence[str]] = []
    for column in columns:
        try:
            joined = "\n".join(column)  # (every cell text: the common case, at C speed)
        except TypeError:
            column = [
                cell if type(cell) is str else "" if cell is None else cell_text(cell)
                for cell in column
            ]
            joined = "\n".join(column)
        # A formula's first character: at the start, or after a line break (the cells hold
        # none of their own when the count below holds).
        if joined[:1] in _FORMULA_START or _FORMULA_AFTER_BREAK.search(joined):
            column = [neutralise(cell) for cell in column]
            joined = "\n".join(column)
        if joined.count("\n") != count - 1 or any(mark in joined for mark in forbidden):
            return None
        texts.append(column)
    return texts


class _JsonlWriter(FileWriter):
    def __init__(self, out: BinaryIO, names: Sequence[str]) -> None:
        super().__init__(out)
        self._names = list(names)

    def header(self, names: Sequence[str]) -> None:
        return None

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        names = self._names
        self._emit(
            b"".join(
                orjson.dumps(dict(zip(names, row, strict=True)), option=orjson.OPT_NAIVE_UTC)
                + b"\n"
                for row in rows
            )
        )
        self.rows += len(rows)


def open_writer(
    out: BinaryIO, fmt: CsvFormat | JsonlFormat, names: Sequence[str], *, part: bool = False
) -> FileWriter:
    """A writer for `fmt`; CSV writes its header (when asked) at once. A `part` of a file
    has neither the header nor the byte order mark: only rows (`FileWriter.append`)."""
    if isinstance(fmt, JsonlFormat):
        return _JsonlWriter(out, names)
    writer = _CsvWriter(out, fmt, names, part=part)
    if fmt.header and not part:
        writer.header(names)
    return writer
