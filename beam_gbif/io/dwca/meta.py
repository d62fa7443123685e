"""meta.xml: which files an archive holds, how they are delimited and which term each column is.

Column order differs between GBIF download years, so every read goes through the indices
declared here, never through fixed positions.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import xml.etree.ElementTree as ElementTree

from beam_gbif.core.errors import OptionError

MULTIMEDIA_ROW_TYPE = "http://rs.gbif.org/terms/1.0/Multimedia"
OCCURRENCE_ROW_TYPE = "http://rs.tdwg.org/dwc/terms/Occurrence"

_ESCAPES = {"\\t": "\t", "\\n": "\n", "\\r": "\r", "\\\\": "\\", "\\'": "'", '\\"': '"'}
_ESCAPE_PATTERN = re.compile(r"\\[tnr\\'\"]")


class DwcaError(OptionError):
    """``--dwca`` names something that cannot be read as a GBIF Darwin Core Archive; the message says why.

    An OptionError, so the command line prints it as one clear line instead of a traceback.
    """


def short_term(term: str) -> str:
    """``http://rs.tdwg.org/dwc/terms/scientificName`` → ``scientificName`` (a short name stays as is)."""
    return term.rstrip("/").rsplit("/", 1)[-1].rsplit("#", 1)[-1]


def unescape_delimiter(text: str) -> str:
    """meta.xml writes delimiters as escapes (``\\t``, ``\\n``, ``\\r\\n``); turn them into characters."""
    return _ESCAPE_PATTERN.sub(lambda match: _ESCAPES[match.group(0)], text)


def safe_member_name(name: str) -> str:
    """A zip member / file location as a normalised relative path, or DwcaError if it could leave its folder."""
    if not name or "\\" in name or "\x00" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise DwcaError(f"unsafe file name in archive: {name!r} (absolute, or with a backslash or drive)")
    normalised = posixpath.normpath(name)
    if normalised == ".." or normalised.startswith("../") or normalised in (".", ""):
        raise DwcaError(f"unsafe file name in archive: {name!r} (it points outside the archive folder)")
    return normalised


@dataclasses.dataclass(frozen=True)
class DwcaField:
    term: str
    index: int | None  # None: a constant column (``default`` only)
    default: str = ""

    @property
    def name(self) -> str:
        return short_term(self.term)


@dataclasses.dataclass(frozen=True)
class DwcaFile:
    """One data file of the archive (the core or an extension) and how to read its rows."""

    location: str
    row_type: str
    fields: tuple[DwcaField, ...]
    id_index: int | None = None  # <id> of the core, <coreid> of an extension
    encoding: str = "UTF-8"
    fields_terminated_by: str = "\t"
    lines_terminated_by: str = "\n"
    fields_enclosed_by: str = ""
    ignore_header_lines: int = 0

    @property
    def width(self) -> int:
        """Columns a well-formed row has at least: one past the highest declared index."""
        indices = [f.index for f in self.fields if f.index is not None]
        if self.id_index is not None:
            indices.append(self.id_index)
        return max(indices, default=-1) + 1

    def field(self, name: str) -> DwcaField | None:
        """The field named by a full term URI or its short name (case-insensitive fallback)."""
        for candidate in self.fields:
            if candidate.term == name:
                return candidate
        short = short_term(name)
        for candidate in self.fields:
            if candidate.name == short:
                return candidate
        lowered = short.lower()
        return next((c for c in self.fields if c.name.lower() == lowered), None)

    def columns(self, names: tuple[str, ...] | list[str]) -> dict[str, DwcaField]:
        """``name → field`` for the names this file declares (names it lacks are left out)."""
        found = {}
        for name in names:
            declared = self.field(name)
            if declared is not None:
                found[name] = declared
        return found


@dataclasses.dataclass(frozen=True)
class ArchiveMeta:
    core: DwcaFile
    extensions: tuple[DwcaFile, ...] = ()

    def extension(self, row_type: str) -> DwcaFile | None:
        return next((e for e in self.extensions if e.row_type == row_type), None)

    def multimedia(self, archive_name: str = "the archive") -> DwcaFile:
        found = self.extension(MULTIMEDIA_ROW_TYPE)
        if found is None:
            declared = ", ".join(f"{short_term(e.row_type)} ({e.location})" for e in self.extensions) or "none"
            raise DwcaError(
                f"{archive_name} has no multimedia extension (rowType {MULTIMEDIA_ROW_TYPE}); its extensions: {declared}. "
                "Request the GBIF download in DWCA format with multimedia."
            )
        return found


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [child for child in element if _local_name(child.tag) == name]


def _int_attribute(element: ElementTree.Element, name: str, default: int | None, where: str) -> int | None:
    raw = element.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise DwcaError(f"meta.xml: {where} has a non-integer {name}={raw!r}") from None
    if value < 0:
        raise DwcaError(f"meta.xml: {where} has a negative {name}={raw!r}")
    return value


def _parse_file(element: ElementTree.Element, kind: str) -> DwcaFile:
    row_type = element.get("rowType", "")
    where = f"<{kind} rowType={row_type!r}>"
    locations = [loc.text.strip() for files in _children(element, "files") for loc in _children(files, "location") if loc.text]
    if not locations:
        raise DwcaError(f"meta.xml: {where} names no file (<files><location>)")
    if len(locations) > 1:
        raise DwcaError(f"meta.xml: {where} names several files {locations}; beam-gbif reads one file per row type")
    id_elements = _children(element, "id" if kind == "core" else "coreid") or _children(element, "id")
    id_index = _int_attribute(id_elements[0], "index", None, where) if id_elements else None
    fields = []
    for field in _children(element, "field"):
        term = (field.get("term") or "").strip()
        if not term:
            raise DwcaError(f"meta.xml: {where} has a <field> without a term")
        index = _int_attribute(field, "index", None, f"{where} field {term}")
        fields.append(DwcaField(term=term, index=index, default=field.get("default", "")))
    enclosed_by = unescape_delimiter(element.get("fieldsEnclosedBy", ""))
    if enclosed_by not in ("", '"') and enclosed_by.strip():
        raise DwcaError(f"meta.xml: {where} encloses fields in {enclosed_by!r}; only unquoted files are supported")
    return DwcaFile(
        location=safe_member_name(locations[0]),
        row_type=row_type,
        fields=tuple(fields),
        id_index=id_index,
        encoding=element.get("encoding") or "UTF-8",
        fields_terminated_by=unescape_delimiter(element.get("fieldsTerminatedBy", "\\t")) or "\t",
        lines_terminated_by=unescape_delimiter(element.get("linesTerminatedBy", "\\n")) or "\n",
        fields_enclosed_by=enclosed_by,
        ignore_header_lines=_int_attribute(element, "ignoreHeaderLines", 0, where) or 0,
    )


def parse_meta(xml: bytes | str, archive_name: str = "the archive") -> ArchiveMeta:
    """Parses meta.xml; DwcaError names what is wrong (not XML, no core, a file without location)."""
    if isinstance(xml, bytes) and b"<!ENTITY" in xml:
        raise DwcaError(f"{archive_name}: meta.xml declares XML entities, which beam-gbif refuses")
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise DwcaError(f"{archive_name}: meta.xml is not valid XML ({exc})") from None
    if _local_name(root.tag) != "archive":
        raise DwcaError(f"{archive_name}: meta.xml root element is <{_local_name(root.tag)}>, expected <archive>")
    cores = _children(root, "core")
    if len(cores) != 1:
        raise DwcaError(f"{archive_name}: meta.xml must declare exactly one <core>, found {len(cores)}")
    extensions = tuple(_parse_file(element, "extension") for element in _children(root, "extension"))
    return ArchiveMeta(core=_parse_file(cores[0], "core"), extensions=extensions)
