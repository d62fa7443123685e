"""The rows of a URL list file, read so that no file can crash the job (url_list.py makes them records).

Lines are read in bounded pieces, bytes that are not UTF-8 are kept as markers rather than raised,
and the csv module's errors are caught: such a row comes out ``unreadable``, with the reason,
and the rows after it are still read.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator, Sequence
from typing import BinaryIO, NamedTuple

# A longer cell is a broken file (an unclosed quote swallowing lines) or an attack on the
# reader's memory; kept below the csv module's own limit (128 KiB), which raises instead.
MAX_CELL_CHARS = 64 * 1024
MAX_LINE_CHARS = 1024 * 1024  # read in bounded pieces: a longer line is never held whole
_PREVIEW_CHARS = 100


def open_text(handle: BinaryIO) -> io.TextIOWrapper:
    # Bytes that are not UTF-8 become lone surrogates instead of an exception; their row is refused.
    return io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape", newline="")


class Lines:
    """Physical lines of a text, each read in bounded pieces; a line over MAX_LINE_CHARS is replaced
    by a bare newline (so line numbers stay right) and its number noted in ``too_long``."""

    def __init__(self, text: io.TextIOWrapper):
        self._text = text
        self.line_number = 0
        self.too_long: list[int] = []

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self._text.readline(MAX_LINE_CHARS + 1)
        if not line:
            raise StopIteration
        self.line_number += 1
        if len(line) <= MAX_LINE_CHARS or line.endswith(("\n", "\r")):
            return line
        while line and not line.endswith(("\n", "\r")):  # skip the rest of the line, piece by piece
            line = self._text.readline(MAX_LINE_CHARS + 1)
        self.too_long.append(self.line_number)
        return "\n"

    def take_too_long(self) -> list[int]:
        taken, self.too_long = self.too_long, []
        return taken


def printable(text: str, limit: int = _PREVIEW_CHARS) -> str:
    """``text`` as it can be shown and stored: undecodable bytes as ``\\xNN``, at most ``limit`` characters."""
    shown = text[:limit].encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return repr(shown) + (f" ... ({len(text)} characters)" if len(text) > limit else "")


def _is_utf8(text: str) -> bool:
    try:  # a lone surrogate (an undecodable byte, see open_text) cannot be encoded strictly
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def cell_problem(values: dict[str, str]) -> str:
    """Why a row's cells cannot be read faithfully ("" if they can): bytes that are not UTF-8, a cell too long.

    Such a row is refused whole, even for a bad creator cell: a guessed name would be a wrong attribution.
    """
    for name, value in values.items():
        if not _is_utf8(value):
            return f"column {printable(name)} is not UTF-8: {printable(value)}"
        if len(value) > MAX_CELL_CHARS:
            return f"column {printable(name)} has more than {MAX_CELL_CHARS} characters: {printable(value)}"
    return ""


class Row(NamedTuple):
    line: int
    values: dict[str, str]
    problem: str = ""  # why the row is skipped or refused
    unreadable: bool = False  # refused: a FAILED_INVALID_URL manifest row instead of a skipped row


def _plain_rows(lines: Lines) -> Iterator[Row]:
    for line in lines:
        url = line.strip()
        if url and not url.startswith("#"):
            yield Row(lines.line_number, {"url": url})


def _csv_rows(lines: Lines, delimiter: str, header: Sequence[str]) -> Iterator[Row]:
    reader = csv.reader(lines, delimiter=delimiter)
    seen_header = False
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # a field over the csv module's limit: the reader goes on with the next line
            yield Row(lines.line_number, {}, f"unreadable CSV ({exc})", unreadable=True)
            continue
        if not any(cell.strip() for cell in cells) or cells[0].lstrip().startswith("#"):
            continue
        if not seen_header:  # the header, already parsed when the job was built
            seen_header = True
            continue
        if len(cells) != len(header):
            yield Row(lines.line_number, {}, f"{len(cells)} cells where the header has {len(header)}")
            continue
        yield Row(lines.line_number, {name: cell.strip() for name, cell in zip(header, cells, strict=True)})


def read_rows(lines: Lines, delimiter: str | None, header: Sequence[str]) -> Iterator[Row]:
    """The rows of a CSV/TSV (``delimiter``) or a one-URL-per-line list (``None``), in file order.

    An over-long line is reported as its own unreadable row, before the row read after it.
    """
    rows = _plain_rows(lines) if delimiter is None else _csv_rows(lines, delimiter, header)
    for row in itertools.chain(rows, [None]):  # None: the end, where the last over-long lines are reported
        for line_number in lines.take_too_long():
            yield Row(line_number, {}, f"the line is longer than {MAX_LINE_CHARS} characters", unreadable=True)
        if row is not None:
            problem = "" if row.problem else cell_problem(row.values)
            yield row._replace(problem=problem, unreadable=True) if problem else row
