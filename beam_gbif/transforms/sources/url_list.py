"""ReadUrlList: the user's own URL list (``--source urls --input FILE``) or an earlier run's failures
(``--retry_failed_from OUTPUT``) → MediaRecords.

``--input``: local or gs://; either a CSV/TSV whose header has a ``url`` column (``identifier``
also works) and optional columns ``label`` (or the ``--label`` field), ``split``, ``license``,
``occurrence_key`` (or ``gbifID``/``key``), ``datasetKey``, ``rightsHolder``, ``creator``,
``publisher``, ``references``, ``format``, ``type`` and the ``--split_streams_by`` fields; or
one URL per line (``#`` comments and blank lines ignored). Bad rows (no URL, a URL that is not
``scheme://host...``, a wrong number of cells) are skipped, counted (``beam_gbif/url_list_bad_rows``)
and logged with their line number. Rows that cannot be read faithfully (bytes that are not UTF-8,
a URL over MAX_URL_CHARS, a cell or line over list_rows.py's limits) are counted too and become
FAILED_INVALID_URL manifest rows (``ReadUrlList.rejected``, joined to the results by ``build()``):
a list file can never crash the job.

A ``split`` cell presets the record's split: a record that arrives at AssignSplits with a
non-empty ``split`` keeps it. Without an occurrence key column, each URL gets a stable
synthetic key (negative, so it can never be mistaken for a GBIF occurrence): splits stay
reproducible and no two URLs share an "occurrence".

``--retry_failed_from``: the FAILED rows of that output's manifest, reset to "not downloaded"
(status, path, bytes, ... cleared), keeping label, split and every other field.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_gbif import METRICS_NAMESPACE
from beam_gbif.core.errors import OptionError
from beam_gbif.core.licenses import normalize_license
from beam_gbif.core.occurrence_fields import check_extra_fields, short_name
from beam_gbif.core.records import DEFAULT_MEDIA_TYPE, RESULT_FIELDS, MediaRecord, Status
from beam_gbif.io.manifest_files import manifest_pattern
from beam_gbif.transforms.sources.list_rows import MAX_LINE_CHARS, Lines, Row, open_text, printable, read_rows
from beam_gbif.transforms.sources.media_items import field_value

_LOG = logging.getLogger(__name__)
T = TypeVar("T")

BAD_ROWS = "url_list_bad_rows"
REJECTED = "rejected"  # the tag of the rows that cannot be read
# A real image URL is well under 2 KiB; browsers and servers commonly stop at 8 KiB.
MAX_URL_CHARS = 8 * 1024
RETRIED_FAILURES = "retried_failures"
DEFAULT_LABEL = "unlabelled"
_URL_COLUMNS = ("url", "identifier")
_KEY_COLUMNS = ("occurrence_key", "gbifID", "key", "occurrenceKey")
_LOGGED_BAD_ROWS = 50  # per worker; the counter has the full number
# What a download sets, with MediaRecord's own defaults (a record before its download).
_RESULT_DEFAULTS = {f.name: f.default for f in dataclasses.fields(MediaRecord) if f.name in RESULT_FIELDS}


def synthetic_occurrence_key(url: str) -> int:
    """A stable negative key from the URL (blake2b, not hash(): the same on every worker)."""
    digest = hashlib.blake2b(url.encode("utf-8"), digest_size=8).digest()
    return -(int.from_bytes(digest, "big") >> 2) - 1


def is_absolute_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return bool(parts.scheme and parts.netloc) and not any(ch.isspace() for ch in url)


class ListFormat:
    """How a list file is laid out, read from its first meaningful line."""

    def __init__(self, delimiter: str | None, header: list[str] | None):
        self.delimiter = delimiter  # None: one URL per line
        self.header = header

    @classmethod
    def sniff(cls, first_line: str, source: str) -> ListFormat:
        line = first_line.rstrip("\r\n")
        if is_absolute_url(line.strip()):
            return cls(None, None)
        delimiter = "\t" if "\t" in line else ","
        header = next(csv.reader([line], delimiter=delimiter))
        names = [name.strip() for name in header]
        if not any(name.lower() in _URL_COLUMNS for name in names):
            raise OptionError(
                f"--input {source}: the first line is neither a URL nor a header with a 'url' column "
                f"(found columns: {', '.join(repr(n) for n in names[:10])})"
            )
        return cls(delimiter, names)


def _first_line(path: str) -> str:
    with FileSystems.open(path) as handle:
        lines = Lines(open_text(handle))
        for raw in lines:
            if lines.too_long:
                raise OptionError(f"--input {path} line {lines.line_number}: longer than {MAX_LINE_CHARS} characters")
            if raw.strip() and not raw.lstrip().startswith("#"):
                return raw
    raise OptionError(f"--input {path}: the file has no URLs")


def _sniff_list_file(path: str) -> ListFormat:
    if not FileSystems.exists(path):
        raise OptionError(f"--input {path}: no such file")
    return ListFormat.sniff(_first_line(path), path)


def _checked(what: str, check: Callable[[], T]) -> T:
    """Runs a construction-time check; a storage failure (permissions, network) becomes one clear line."""
    try:
        return check()
    except OptionError:
        raise
    except Exception as exc:  # noqa: BLE001 - any filesystem error, named in the message
        raise OptionError(f"{what}: cannot read it ({type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''})") from exc


def _column(row: dict[str, str], names: Sequence[str]) -> str:
    for name in names:
        value = field_value(row, name)
        if value:
            return value
    return ""


def url_too_long(values: dict[str, str]) -> str:
    """Why a row's URL is refused ("" if it is not): longer than MAX_URL_CHARS (its cells are checked by read_rows)."""
    url = _column(values, _URL_COLUMNS)
    return f"the URL has more than {MAX_URL_CHARS} characters: {printable(url)}" if len(url) > MAX_URL_CHARS else ""


def rejected_record(path: str, line_number: int, reason: str) -> MediaRecord:
    """A row that cannot be read, as a FAILED_INVALID_URL manifest row.

    It has no trustworthy URL, so its ``url`` says where it is: ``line 7 of list.csv`` is no
    absolute URL, so it can never be fetched (not even by --retry_failed_from), and no two rows share it.
    """
    where = f"line {line_number} of {path}"
    return MediaRecord(url=where, label=DEFAULT_LABEL, occurrence_key=synthetic_occurrence_key(where), source=f"urls:{path}",
                       status=Status.FAILED_INVALID_URL, error=f"{where}: {reason}")


class _ReadListFile(beam.DoFn):
    """One list file → records; unreadable rows → REJECTED records; bad rows counted and logged here."""

    def __init__(self, list_format: ListFormat, label_field: str, stream_fields: Sequence[str], media_type: str,
                 extra_fields: Sequence[str] = ()):
        self._format = list_format
        self._extra_fields = tuple(extra_fields)
        self._label_field = label_field
        self._stream_fields = tuple(stream_fields)
        self._media_type = media_type
        self._bad_rows = Metrics.counter(METRICS_NAMESPACE, BAD_ROWS)

    def process(self, path: str) -> Iterator[MediaRecord | beam.pvalue.TaggedOutput]:
        skipped = rejected = 0
        with FileSystems.open(path) as handle:
            for row in self._rows(Lines(open_text(handle))):
                if not row.problem:
                    record, problem = self._record(row.values, path)
                    if record is not None:
                        yield record
                        continue
                    row = row._replace(problem=problem)
                self._bad_rows.inc()
                if row.unreadable:
                    rejected += 1
                    yield beam.pvalue.TaggedOutput(REJECTED, rejected_record(path, row.line, row.problem))
                else:
                    skipped += 1
                if skipped + rejected <= _LOGGED_BAD_ROWS:
                    outcome = Status.FAILED_INVALID_URL if row.unreadable else "skipped"
                    _LOG.warning("%s line %d: %s, %s", path, row.line, outcome, row.problem)
        if skipped:
            _LOG.warning("%s: %d bad row(s) skipped", path, skipped)
        if rejected:
            _LOG.warning("%s: %d unreadable row(s) recorded as %s", path, rejected, Status.FAILED_INVALID_URL)

    def _rows(self, lines: Lines) -> Iterator[Row]:
        for row in read_rows(lines, self._format.delimiter, self._format.header or []):
            problem = "" if row.problem else url_too_long(row.values)
            yield row._replace(problem=problem, unreadable=True) if problem else row

    def _record(self, row: dict[str, str], path: str) -> tuple[MediaRecord | None, str]:
        url = _column(row, _URL_COLUMNS)
        if not url:
            return None, "no URL"
        if not is_absolute_url(url):
            return None, f"not an absolute URL: {url[:200]!r}"
        key_text = _column(row, _KEY_COLUMNS)
        try:
            occurrence_key = int(key_text) if key_text else synthetic_occurrence_key(url)
        except ValueError:
            return None, f"occurrence key is not an integer: {key_text[:50]!r}"
        raw_license = _column(row, ("license", "licence"))
        record = MediaRecord(
            url=url,
            label=_column(row, (self._label_field, "label")) or DEFAULT_LABEL,
            occurrence_key=occurrence_key,
            stream=tuple(field_value(row, name) for name in self._stream_fields),
            dataset_key=_column(row, ("datasetKey", "dataset_key")),
            media_type=_column(row, ("type", "media_type")) or self._media_type,
            media_format=_column(row, ("format", "media_format")),
            license=raw_license,
            license_code=normalize_license(raw_license),
            rights_holder=_column(row, ("rightsHolder", "rights_holder")),
            creator=_column(row, ("creator",)),
            publisher=_column(row, ("publisher",)),
            references=_column(row, ("references",)),
            source=f"urls:{path}",
            split=_column(row, ("split",)),
            extra=tuple((short_name(name), field_value(row, name)) for name in self._extra_fields),
        )
        return record, ""


def reset_for_retry(record: MediaRecord) -> MediaRecord:
    """A manifest row as it was before its download: result fields back to their defaults."""
    return record.replace(**_RESULT_DEFAULTS)


class _KeepFailures(beam.DoFn):
    def __init__(self) -> None:
        self._retried = Metrics.counter(METRICS_NAMESPACE, RETRIED_FAILURES)

    def process(self, row: dict) -> Iterable[MediaRecord]:
        if Status.is_failure(row.get("status") or ""):
            self._retried.inc()
            yield reset_for_retry(MediaRecord.from_dict(row))


@dataclasses.dataclass(frozen=True)
class UrlListSettings:
    """Exactly one of ``input`` (a CSV/TSV list with a url column, or one URL per line) and
    ``retry_failed_from`` (an earlier output: its FAILED manifest rows). ``label_field``: the
    list's label column; ``stream_fields``: its stream columns; ``media_type``: what a body must be.
    ``extra_fields``: list columns carried into every record (a missing column is an empty value)."""

    input: str | None = None
    retry_failed_from: str | None = None
    label_field: str = "label"
    stream_fields: tuple[str, ...] = ()
    media_type: str = DEFAULT_MEDIA_TYPE
    extra_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "stream_fields", tuple(self.stream_fields))
        object.__setattr__(self, "extra_fields", check_extra_fields(self.extra_fields, source="urls"))
        if bool(self.input) == bool(self.retry_failed_from):
            raise OptionError("--source urls needs exactly one of --input FILE or --retry_failed_from OUTPUT")


class ReadUrlList(beam.PTransform):
    """``--input`` list file or ``--retry_failed_from`` manifest → MediaRecords (exactly one of them).

    Once applied to an ``--input`` list, ``rejected`` holds its unreadable rows as FAILED_INVALID_URL
    records: they belong in the manifest, but not in the licence filter, sampling or download.
    """

    def __init__(self, settings: UrlListSettings):
        super().__init__()
        input, retry_failed_from = settings.input, settings.retry_failed_from
        self._input = input
        self._retry_failed_from = retry_failed_from
        self._label_field = settings.label_field
        self._stream_fields = settings.stream_fields
        self._media_type = settings.media_type
        self._extra_fields = settings.extra_fields
        # Set by expand() for an --input list: its unreadable rows, already FAILED_INVALID_URL records.
        self.rejected: beam.PCollection | None = None
        # Checked now, so a bad file is a clear error before any worker starts.
        if input:
            self._format = _checked(f"--input {input}", lambda: _sniff_list_file(input))
        else:
            pattern = manifest_pattern(retry_failed_from)
            found = _checked(f"--retry_failed_from {retry_failed_from}", lambda: FileSystems.match([pattern]))
            if not any(result.metadata_list for result in found):
                raise OptionError(f"--retry_failed_from {retry_failed_from}: no manifest found ({pattern})")

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        if self._retry_failed_from:
            return (
                pbegin
                | "ReadManifest" >> beam.io.ReadFromAvro(manifest_pattern(self._retry_failed_from))
                | "KeepFailures" >> beam.ParDo(_KeepFailures())
            )
        rows = (
            pbegin
            | "ListFile" >> beam.Create([self._input])
            | "ReadRows" >> beam.ParDo(_ReadListFile(self._format, self._label_field, self._stream_fields, self._media_type,
                                                  self._extra_fields))
            .with_outputs(REJECTED, main="records")
        )
        self.rejected = rows[REJECTED]
        return rows.records | "Spread" >> beam.Reshuffle()
