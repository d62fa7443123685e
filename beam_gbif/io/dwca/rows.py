"""Rows of an archive's text files → the few columns the pipeline needs, keyed by gbifID.

Rows are split on the declared delimiter only (no quoting), so a literal ``"`` inside a value
survives. Each row keeps only the projected columns, as a tuple, to keep the join's shuffle small.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from beam_gbif.io.dwca.meta import DwcaError, DwcaFile

# Multimedia extension columns that media_records reads (short Dublin Core term names).
MEDIA_COLUMNS: tuple[str, ...] = ("type", "format", "identifier", "references", "creator", "publisher", "license", "rightsHolder")


@dataclasses.dataclass(frozen=True)
class Projection:
    """How to cut one row of ``file`` down to ``names``: the column index of each, or a constant."""

    names: tuple[str, ...]
    indices: tuple[int | None, ...]
    defaults: tuple[str, ...]
    id_index: int
    width: int
    encoding: str
    delimiter: str

    def parse(self, line: bytes | str) -> tuple[str, tuple[str, ...]] | None:
        """``(id, values)`` or None when the row has too few columns (malformed) or no id."""
        text = line.decode(self.encoding, errors="replace") if isinstance(line, bytes) else line
        text = text.rstrip("\r\n")
        if not text:
            return None
        columns = text.split(self.delimiter)
        if len(columns) < self.width:
            return None
        row_id = columns[self.id_index].strip()
        if not row_id:
            return None
        values = tuple(
            (columns[index] if index is not None else default).strip() or default
            for index, default in zip(self.indices, self.defaults, strict=True)
        )
        return row_id, values

    def as_dict(self, values: Sequence[str]) -> dict[str, str]:
        return dict(zip(self.names, values, strict=True))

    def pack(self, values: Sequence[str]) -> bytes:
        """The values as one bytes object, joined by the file's own delimiter (which no value can contain).

        One object per shuffled element instead of a tuple of strings: the local runner keeps
        every grouped element in memory, and this cuts its per-row footprint several times.
        """
        return self.delimiter.join(values).encode("utf-8")

    def unpack(self, packed: bytes) -> dict[str, str]:
        return dict(zip(self.names, packed.decode("utf-8").split(self.delimiter), strict=True))


def projection(file: DwcaFile, names: Iterable[str], *, required: Iterable[str] = (), archive_name: str = "the archive") -> Projection:
    """A projection of ``file`` onto ``names`` (full term URIs or short names).

    A name in ``required`` that ``file`` does not declare is a DwcaError listing what it has; other
    absent names become constant empty columns (as an absent field is ``""`` in the API source).
    """
    if file.id_index is None:
        raise DwcaError(f"{archive_name}: meta.xml gives {file.location} no id column (<id>/<coreid> index)")
    names = tuple(dict.fromkeys(names))
    declared = file.columns(names)
    missing = [name for name in required if name not in declared]
    if missing:
        available = ", ".join(sorted(field.name for field in file.fields))
        raise DwcaError(f"{archive_name}: {file.location} has no column {', '.join(map(repr, missing))}; its columns: {available}")
    indices = tuple(declared[name].index if name in declared else None for name in names)
    defaults = tuple(declared[name].default if name in declared else "" for name in names)
    try:
        "".encode(file.encoding)
    except LookupError:
        raise DwcaError(f"{archive_name}: {file.location} declares an unknown encoding {file.encoding!r}") from None
    if file.lines_terminated_by not in ("\n", "\r\n"):
        raise DwcaError(f"{archive_name}: {file.location} ends lines with {file.lines_terminated_by!r}; only \\n and \\r\\n are supported")
    return Projection(
        names=names,
        indices=indices,
        defaults=defaults,
        id_index=file.id_index,
        width=file.width,
        encoding=file.encoding,
        delimiter=file.fields_terminated_by,
    )
