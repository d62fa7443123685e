"""WriteManifest: the dataset's manifest (Avro), ATTRIBUTION.csv and stats.json, local or gs://.

Layout under the output root::

    manifest/part-<run id>-00000-of-00003.avro   one row per record (downloaded, skipped, failed, kept from an earlier run)
    ATTRIBUTION.csv                              one row per file in the dataset, sorted by path, formulas made inert
    stats.json                                   counts by status, split, label, licence; bytes

A rerun replaces all three: the manifest describes the dataset as it now stands, earlier runs'
files that this run did not select included (transforms/carry_over.py). Its shards
carry the run id, and once this run's shards are final, every other ``*.avro`` in
``manifest/`` (an older run's) is deleted — so a retried finalisation, which renames only
what is still missing, never deletes a shard of its own run.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import secrets
import time
import typing
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_gbif.core.errors import OptionError
from beam_gbif.core.records import FIELD_NAMES, IN_DATASET, MediaRecord
from beam_gbif.io.manifest_files import ATTRIBUTION_FILE, MANIFEST_DIR, manifest_pattern, read_attribution, read_manifest
from beam_gbif.io.store import join_uri
from beam_gbif.transforms.carry_over import CarryOverManifest, CarryOverSettings
from beam_gbif.transforms.stats import ComputeStats, finalize_stats, format_summary, metric_counters

__all__ = ["WriteManifest", "ManifestSettings", "read_manifest", "finalize_stats", "format_summary", "metric_counters", "manifest_schema",
           "read_attribution", "MANIFEST_DIR", "ATTRIBUTION_FILE", "manifest_pattern"]

_LOG = logging.getLogger(__name__)

OCCURRENCE_URL = "https://www.gbif.org/occurrence/{key}"
ATTRIBUTION_COLUMNS = (
    "path", "url", "license", "license_code", "rights_holder", "creator", "publisher", "occurrence_url", "dataset_key",
    "shard", "key",
)

_AVRO_TYPES = {str: "string", int: "long", float: "double", bool: "boolean"}


def manifest_schema() -> dict[str, Any]:
    """The Avro schema of a manifest row: every MediaRecord field, in declaration order."""
    hints = typing.get_type_hints(MediaRecord)
    fields = []
    for name in FIELD_NAMES:
        hint = hints[name]
        if hint in _AVRO_TYPES:
            avro_type: Any = _AVRO_TYPES[hint]
        elif typing.get_origin(hint) is tuple and set(typing.get_args(hint)) <= {str, Ellipsis}:
            avro_type = {"type": "array", "items": "string"}
        elif hint == tuple[tuple[str, str], ...]:  # named values (--extra_fields): a map keeps their names
            avro_type = {"type": "map", "values": "string"}
        else:  # a new field type needs a deliberate Avro mapping, not a silent guess
            raise TypeError(f"MediaRecord.{name}: no Avro mapping for {hint!r}")
        fields.append({"name": name, "type": avro_type})
    return {"type": "record", "name": "MediaRecord", "namespace": "beam_gbif", "fields": fields}


def occurrence_url(occurrence_key: int) -> str:
    """GBIF's page of the occurrence; ``""`` for records without a real occurrence (URL lists)."""
    return OCCURRENCE_URL.format(key=occurrence_key) if occurrence_key > 0 else ""


# A spreadsheet reads a cell that starts with one of these as a formula (OWASP's CSV injection list).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def inert_cell(value: str) -> str:
    """``value`` as spreadsheet text: a leading ``'`` when it would start a formula, otherwise unchanged.

    Creators, rights holders and licences come from GBIF publishers and URL lists, i.e. from
    anyone: ``=HYPERLINK(...)`` must not become a live link or command when the file is opened.
    """
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def attribution_row(record: MediaRecord) -> list[str]:
    """The record's ATTRIBUTION.csv cells, in ATTRIBUTION_COLUMNS order, each made inert."""
    values = [
        record.path, record.url, record.license, record.license_code, record.rights_holder, record.creator,
        record.publisher, occurrence_url(record.occurrence_key), record.dataset_key, record.shard, record.key,
    ]
    return [inert_cell(value) for value in values]


def in_dataset(record: MediaRecord) -> bool:
    return record.status in IN_DATASET


def attribution_line(record: MediaRecord) -> tuple[str, str]:
    """(the path cell, the CSV line): the path cell is what the file is sorted by."""
    row = attribution_row(record)
    return row[0], _csv_line(row)


def sorted_lines(keyed_lines: list[tuple[str, str]]) -> Iterator[str]:
    """All lines as one text, sorted by path (nothing for no lines, so an empty dataset gets just the header).

    One element, not one per line: the text sink groups its input, which would lose any order.
    """
    if keyed_lines:
        yield "\n".join(line for _, line in sorted(keyed_lines))


def _csv_line(values: list[str]) -> str:
    # The terminator names the characters that force quoting: a "\n" inside a value stays quoted.
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(values)
    return buffer.getvalue()[:-2]


def new_run_id() -> str:
    """Sortable and unique per run: UTC time plus a random suffix (two runs in one second stay apart)."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


class _RemoveStaleShards(beam.DoFn):
    """Deletes manifest shards of other runs once this run's shards are final."""

    def __init__(self, manifest_dir: str, run_id: str):
        self._manifest_dir = manifest_dir
        self._prefix = f"part-{run_id}-"

    def process(self, unused_final_count: int) -> Iterable[str]:
        pattern = join_uri(self._manifest_dir, "*.avro")
        stale = [m.path for result in FileSystems.match([pattern]) for m in result.metadata_list
                 if not m.path.rstrip("/").rsplit("/", 1)[-1].startswith(self._prefix)]
        if stale:
            FileSystems.delete(stale)
            _LOG.info("manifest: removed %d shard(s) of earlier runs from %s", len(stale), self._manifest_dir)
        yield from stale


class WriteManifestShards(beam.PTransform):
    """Records → ``manifest/part-<run id>-*.avro``, then older runs' shards removed. Emits removed paths."""

    def __init__(self, output: str, run_id: str):
        super().__init__()
        self._manifest_dir = join_uri(output, MANIFEST_DIR)
        self._run_id = run_id

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (
            records
            | "ToAvroDict" >> beam.Map(MediaRecord.to_dict)
            | "WriteAvro" >> beam.io.WriteToAvro(join_uri(self._manifest_dir, f"part-{self._run_id}"), schema=manifest_schema(),
                                                 file_name_suffix=".avro")
            | "CountShards" >> beam.combiners.Count.Globally()
            | "RemoveStaleShards" >> beam.ParDo(_RemoveStaleShards(self._manifest_dir, self._run_id))
        )


class WriteAttribution(beam.PTransform):
    """Files in the dataset → ``ATTRIBUTION.csv`` (one file, with a header, rows sorted by path).

    The rows are gathered in one place to be sorted: the file has one short row per dataset file,
    so even millions of files fit in one worker's memory, and a rerun writes the same bytes.
    """

    def __init__(self, output: str):
        super().__init__()
        self._path = join_uri(output, ATTRIBUTION_FILE)

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (
            records
            | "InDataset" >> beam.Filter(in_dataset)
            | "ToCsvLine" >> beam.Map(attribution_line)
            | "AllLines" >> beam.combiners.ToList()
            | "SortByPath" >> beam.FlatMap(sorted_lines)
            | "WriteCsv" >> beam.io.WriteToText(self._path, num_shards=1, shard_name_template="",
                                                header=_csv_line(list(ATTRIBUTION_COLUMNS)))
        )


@dataclasses.dataclass(frozen=True)
class ManifestSettings:
    """``output``: the dataset root. ``run_id``: names this run's manifest shards (default: a new
    sortable id). ``carry_over``: the output already has a manifest; its rows of files this run did
    not select are kept (KEPT_FROM_EARLIER_RUN) or, with ``prune``, their files deleted, as are
    media files in no row (transforms/carry_over.py). ``earlier_is_selection``: those rows are this run's selection
    (``--retry_failed_from`` into the output itself): kept as they are. ``citations``: how to cite
    the sources read (the DwC-A download's DOI), for stats.json. ``scratch_dir``: the local
    runners' spill folder.
    """

    output: str = ""
    run_id: str = ""
    carry_over: bool = False
    prune: bool = False
    earlier_is_selection: bool = False
    citations: tuple[Mapping[str, Any], ...] = ()
    scratch_dir: str | None = None

    def __post_init__(self) -> None:
        if not self.output:
            raise OptionError("--output is required: a local folder or gs://bucket/prefix for the dataset")
        object.__setattr__(self, "run_id", self.run_id or new_run_id())
        object.__setattr__(self, "citations", tuple(self.citations))


class WriteManifest(beam.PTransform):
    """Download results → manifest Avro + ATTRIBUTION.csv + stats.json under ``output``.

    Returns a PCollection with one element: the stats dict as written to stats.json.
    """

    def __init__(self, settings: ManifestSettings, cited: beam.PCollection | None = None, streams: beam.PCollection | None = None):
        """``cited``: how to cite what the source read, known only at run time (ReadDwcaMedia.citations);
        ``streams``: the sampler's per-stream rows, for stats.json (SampleStreams.stream_stats)."""
        super().__init__()
        self.settings = settings
        self._cited = cited
        self._streams = streams
        self._carry_over = CarryOverSettings(
            settings.output, earlier_manifest=settings.carry_over, prune=settings.prune, earlier_is_selection=settings.earlier_is_selection,
            scratch_dir=settings.scratch_dir) if settings.carry_over or settings.prune else None

    def expand(self, results: beam.PCollection) -> beam.PCollection:
        settings = self.settings
        if self._carry_over:
            results = results | "CarryOver" >> CarryOverManifest(self._carry_over)
        results | "Manifest" >> WriteManifestShards(settings.output, settings.run_id)
        results | "Attribution" >> WriteAttribution(settings.output)
        return results | "Stats" >> ComputeStats(settings.output, settings.run_id, settings.citations, self._cited, self._streams)


