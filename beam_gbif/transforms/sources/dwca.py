"""ReadDwcaMedia: a GBIF download (Darwin Core Archive) → MediaRecords, with the pipeline's parallelism.

The pipeline's first step resolves, caches and extracts the archive (beam_gbif.io.dwca.archive);
building the graph reads nothing. The occurrence core and the multimedia extension are then read as splittable text files,
projected to the few columns needed and joined by gbifID with a GroupByKey, so no process
ever holds the archive (on local runners that GroupByKey spills to disk: beam_gbif.transforms.spill).
The records are built by the same media_records() as the API source.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam import coders
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_gbif import DEFAULT_USER_AGENT, METRICS_NAMESPACE
from beam_gbif.core.occurrence_fields import check_extra_fields
from beam_gbif.core.records import DEFAULT_LABEL_FIELD, DEFAULT_MEDIA_TYPE, MediaRecord
from beam_gbif.io.dwca.archive import PreparedArchive, citation_of, prepare_archive
from beam_gbif.io.dwca.meta import DwcaError
from beam_gbif.io.dwca.request import download_key_for_predicate
from beam_gbif.io.dwca.rows import MEDIA_COLUMNS, Projection, projection
from beam_gbif.io.gbif.client import DEFAULT_GBIF_API_URL, GbifClient
from beam_gbif.transforms.live_bars import tick
from beam_gbif.transforms.sources.media_items import (
    DROPPED_MEDIA_NO_URL,
    DROPPED_MEDIA_OTHER_TYPE,
    DROPPED_NO_MEDIA,
    media_records,
    media_type_of,
)
from beam_gbif.transforms.spill import GroupByKeyOnDisk, warn_if_short_of_space

MALFORMED_OCCURRENCE_ROWS = "dwca_malformed_occurrence_rows"
MALFORMED_MULTIMEDIA_ROWS = "dwca_malformed_multimedia_rows"
MEDIA_WITHOUT_OCCURRENCE = "dwca_media_without_occurrence"
DUPLICATE_OCCURRENCE_ROWS = "dwca_duplicate_occurrence_rows"
INVALID_OCCURRENCE_IDS = "dwca_invalid_occurrence_ids"

# Join input: (gbifID, tag + packed values). A one-byte tag instead of CoGroupByKey's tagged
# tuples keeps every shuffled element a single bytes object (see Projection.pack).
_OCCURRENCE = b"o"
_MEDIA = b"m"

# Measured (bench/dwca.py, 2M occurrences / 3M media rows): the on-disk shuffles peaked at 0.39 byte
# per byte of extracted occurrence.txt + multimedia.txt; the warning leaves some margin above that.
_SPILL_PER_EXTRACTED_BYTE = 0.5


class _ParseRows(beam.DoFn):
    """A row → ``(gbifID, tag + packed projected values)``; rows with too few columns are counted and skipped.

    Core rows are all kept (tag ``b"o"``); _ParseMedia keeps only the wanted media.
    """

    def __init__(self, tag: bytes, malformed_counter: str):
        self._tag = tag
        self._malformed = Metrics.counter(METRICS_NAMESPACE, malformed_counter)
        self._unshown = 0  # rows read since the live bar was last advanced (it is advanced per thousand, not per row)

    def columns(self, plan: ArchivePlan) -> Projection:
        return plan.occurrence_columns

    def finish_bundle(self) -> None:
        tick("reading archive", self._unshown, "rows")
        self._unshown = 0

    def process(self, line: bytes, plan: ArchivePlan) -> Iterable[tuple[str, bytes]]:
        self._unshown += 1
        if self._unshown >= 1000:
            self.finish_bundle()
        if line in plan.headers:
            return
        columns = self.columns(plan)
        parsed = columns.parse(line)
        if parsed is None:
            self._malformed.inc()
            return
        row_id, values = parsed
        if self._keep(columns, values):
            yield row_id, self._tag + columns.pack(values)

    def _keep(self, columns: Projection, values: tuple[str, ...]) -> bool:
        return True


class _ParseMedia(_ParseRows):
    """A multimedia row → ``(gbifID, b"m" + values)`` when it is of the wanted type and has a URL.

    Filtering here, before the join, keeps sounds and URL-less rows out of the shuffle; the
    drops are counted under media_records' own counter names.
    """

    def __init__(self, media_type: str):
        super().__init__(_MEDIA, MALFORMED_MULTIMEDIA_ROWS)
        self._media_type = media_type
        self._other_type = Metrics.counter(METRICS_NAMESPACE, DROPPED_MEDIA_OTHER_TYPE)
        self._no_url = Metrics.counter(METRICS_NAMESPACE, DROPPED_MEDIA_NO_URL)

    def columns(self, plan: ArchivePlan) -> Projection:
        return plan.media_columns

    def _keep(self, columns: Projection, values: tuple[str, ...]) -> bool:
        item = columns.as_dict(values)
        if media_type_of(item) != self._media_type:
            self._other_type.inc()
            return False
        if not item["identifier"]:
            self._no_url.inc()
            return False
        return True


class _BuildRecords(beam.DoFn):
    """One gbifID's occurrence row and media rows → its MediaRecords (none when it has no media)."""

    def __init__(self, label_field: str, stream_fields: Sequence[str], media_type: str, licenses: frozenset[str] = frozenset(),
                 one_media_seed: int | None = None, extra_fields: Sequence[str] = ()):
        self._licenses = licenses
        self._extra_fields = tuple(extra_fields)
        self._one_media_seed = one_media_seed
        self._label_field = label_field
        self._stream_fields = tuple(stream_fields)
        self._media_type = media_type
        self._no_media = Metrics.counter(METRICS_NAMESPACE, DROPPED_NO_MEDIA)
        self._orphans = Metrics.counter(METRICS_NAMESPACE, MEDIA_WITHOUT_OCCURRENCE)
        self._duplicates = Metrics.counter(METRICS_NAMESPACE, DUPLICATE_OCCURRENCE_ROWS)
        self._invalid_ids = Metrics.counter(METRICS_NAMESPACE, INVALID_OCCURRENCE_IDS)

    def process(self, joined: tuple[str, Iterable[bytes]], plan: ArchivePlan) -> Iterable[MediaRecord]:
        gbif_id, tagged = joined
        occurrences: list[bytes] = []
        media: list[bytes] = []
        for value in tagged:
            (occurrences if value[:1] == _OCCURRENCE else media).append(value[1:])
        if not occurrences:
            self._orphans.inc(len(media))
            return
        if not media:
            self._no_media.inc()  # most occurrences of a download have no media at all
            return
        if len(occurrences) > 1:
            self._duplicates.inc(len(occurrences) - 1)
        occurrence = plan.occurrence_columns.unpack(min(occurrences))  # min: independent of delivery order
        occurrence["gbifID"] = gbif_id
        items = [plan.media_columns.unpack(packed) for packed in sorted(media)]
        try:
            records, dropped = media_records(
                occurrence, items, label_field=self._label_field, stream_fields=self._stream_fields,
                media_type=self._media_type, source=plan.source, licenses=self._licenses, one_media_seed=self._one_media_seed,
                extra_fields=self._extra_fields,
            )
        except ValueError:  # a core id that is not a number cannot be an occurrence key
            self._invalid_ids.inc()
            return
        for name, count in dropped.items():
            Metrics.counter(METRICS_NAMESPACE, name).inc(count)
        yield from records


@dataclasses.dataclass(frozen=True)
class DwcaReadSettings:
    """Exactly one of ``dwca`` (a download DOI, a download key, a local zip or a gs:// URI) and
    ``download_predicate`` (JSON of a new download to request with GBIF_USER/GBIF_PWD, polled every
    ``download_poll_seconds``). ``label_field`` and ``stream_fields``: core terms by short name or
    URI. ``cache_root``: where archives are cached and extracted (default: the beam-gbif cache).
    ``licenses``: codes to keep (empty: all). ``one_media_seed``: keep one media per occurrence,
    seeded (None: all media). ``scratch_dir``: the local runners' spill folder for the join.
    """

    dwca: str | None = None
    label_field: str = DEFAULT_LABEL_FIELD
    stream_fields: tuple[str, ...] = ()
    media_type: str = DEFAULT_MEDIA_TYPE
    cache_root: str | None = None
    api_url: str = DEFAULT_GBIF_API_URL
    user_agent: str = DEFAULT_USER_AGENT
    download_predicate: str | None = None
    download_poll_seconds: float = 5.0
    licenses: frozenset[str] = frozenset()
    one_media_seed: int | None = None
    scratch_dir: str | None = None
    extra_fields: tuple[str, ...] = ()  # terms by short name or URI; one the archive lacks is an empty value

    def __post_init__(self) -> None:
        object.__setattr__(self, "stream_fields", tuple(self.stream_fields))
        object.__setattr__(self, "extra_fields", check_extra_fields(self.extra_fields, source="dwca"))
        object.__setattr__(self, "licenses", frozenset(self.licenses))
        if bool(self.dwca) == bool(self.download_predicate):
            raise DwcaError(
                "the dwca source needs exactly one of --dwca (a download DOI, a download key, a local zip or a gs:// URI) "
                "and --gbif_download_predicate (a new download requested with GBIF_USER/GBIF_PWD)"
            )


@dataclasses.dataclass(frozen=True)
class ArchivePlan:
    """What the readers need of a prepared archive; one element, read by them as a side input.

    ``headers``: the header lines of each text file (meta.xml's ignoreHeaderLines), dropped by
    content because a file is read in splits that do not know where the file starts.
    """

    core_uri: str
    multimedia_uri: str
    occurrence_columns: Projection
    media_columns: Projection
    headers: frozenset[bytes]
    source: str
    citation: dict[str, Any]


def prepare(settings: DwcaReadSettings) -> PreparedArchive:
    """Resolves (or requests and waits for), downloads or reuses, and extracts the archive; memoised per process."""
    client = GbifClient(settings.api_url, settings.user_agent)
    spec = settings.dwca or download_key_for_predicate(client, settings.download_predicate, first_delay=settings.download_poll_seconds)
    return prepare_archive(spec, cache_root=settings.cache_root, client=client)


def archive_citation(settings: DwcaReadSettings) -> dict[str, Any]:
    """How to cite the archive ``settings`` name (DOI, GBIF's citation line, ...): see ``citation_of``."""
    return citation_of(prepare(settings))


def plan_archive(settings: DwcaReadSettings) -> ArchivePlan:
    """Prepares the archive and checks its columns (a missing label or stream column is a DwcaError naming it)."""
    prepared = prepare(settings)
    name = prepared.archive.zip_uri
    core, multimedia = prepared.core, prepared.multimedia
    needed = (settings.label_field, *settings.stream_fields, "datasetKey", *settings.extra_fields)
    required = (settings.label_field, *settings.stream_fields)
    if settings.scratch_dir:
        expected = _extracted_bytes(prepared) * _SPILL_PER_EXTRACTED_BYTE
        warn_if_short_of_space(settings.scratch_dir, int(expected), f"reading {name}")
    headers = _header_lines(prepared.core_uri, core.ignore_header_lines)
    headers |= _header_lines(prepared.multimedia_uri, multimedia.ignore_header_lines)
    return ArchivePlan(
        core_uri=prepared.core_uri, multimedia_uri=prepared.multimedia_uri,
        occurrence_columns=projection(core, needed, required=required, archive_name=name),
        media_columns=projection(multimedia, MEDIA_COLUMNS, required=("identifier",), archive_name=name),
        headers=headers, source=prepared.archive.source, citation=citation_of(prepared),
    )


class ReadDwcaMedia(beam.PTransform):
    """``--dwca DOI|KEY|PATH`` → a PCollection of MediaRecord (one per media item of the wanted type).

    Building the graph reads nothing: the archive is resolved, downloaded and extracted by the
    pipeline's first step. After the transform is applied, ``citations`` is a PCollection of one
    dict: how to cite the archive read (for stats.json).
    """

    def __init__(self, settings: DwcaReadSettings):
        super().__init__()
        self.settings = settings
        self.citations: beam.PCollection | None = None

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        settings = self.settings
        plan = pbegin | "Archive" >> beam.Create([settings]) | "PrepareArchive" >> beam.Map(plan_archive)
        self.citations = plan | "Citation" >> beam.Map(lambda archive: archive.citation)
        side = beam.pvalue.AsSingleton(plan)
        occurrences = (
            plan
            | "OccurrenceFile" >> beam.Map(lambda archive: archive.core_uri)
            | "ReadOccurrences" >> _read_lines()
            | "ParseOccurrences" >> beam.ParDo(_ParseRows(_OCCURRENCE, MALFORMED_OCCURRENCE_ROWS), side).with_output_types(
                tuple[str, bytes])
        )
        media = (
            plan
            | "MultimediaFile" >> beam.Map(lambda archive: archive.multimedia_uri)
            | "ReadMultimedia" >> _read_lines()
            | "ParseMedia" >> beam.ParDo(_ParseMedia(settings.media_type), side).with_output_types(tuple[str, bytes])
        )
        build = _BuildRecords(settings.label_field, settings.stream_fields, settings.media_type, settings.licenses, settings.one_media_seed,
                               settings.extra_fields)
        return (
            (occurrences, media)
            | "JoinByGbifId" >> GroupByKeyOnDisk(settings.scratch_dir, value_coder=coders.BytesCoder())
            | "BuildRecords" >> beam.ParDo(build, side).with_output_types(MediaRecord)
        )


def _extracted_bytes(prepared: PreparedArchive) -> int:
    matches = FileSystems.match([prepared.core_uri, prepared.multimedia_uri])
    return sum(metadata.size_in_bytes for match in matches for metadata in match.metadata_list)


def _header_lines(uri: str, count: int) -> frozenset[bytes]:
    lines = []
    with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        for _ in range(count):
            lines.append(handle.readline().rstrip(b"\r\n"))
    return frozenset(lines)


def _read_lines() -> beam.PTransform:
    # Bytes, not text: each file's declared encoding is applied when the row is parsed. Files are
    # split into ranges read in parallel, as ReadFromText would, but named only at run time.
    return beam.io.ReadAllFromText(coder=coders.BytesCoder())
