"""CarryOverManifest: a rerun into an output that already has files keeps the folder and its manifest in step.

A run with another selection (another seed, quota or query) leaves the earlier run's files on disk.
Each earlier manifest row of a file in the dataset (DOWNLOADED, SKIPPED_EXISTING or
KEPT_FROM_EARLIER_RUN) whose path no result of this run holds describes such a file. While the file
still exists (checked through the Store), its row joins this run's as KEPT_FROM_EARLIER_RUN, so it
keeps its manifest and ATTRIBUTION.csv rows; with ``prune`` the file is deleted instead and gets no
row. A row whose file is gone is dropped. With ``prune`` the output is also listed, and a media
file that is in no row at all (a run killed before it wrote its manifest) is deleted too.

``earlier_is_selection``: a ``--retry_failed_from`` into its own output downloads only the earlier
failures, yet the earlier rows are still this run's selection: they keep their status and are
never pruned.

Rows are joined by path, not URL: a URL this run places elsewhere (another split) leaves its
earlier file where it was, and that file keeps its own row.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Callable, Iterable

import apache_beam as beam
from apache_beam import coders
from apache_beam.metrics import Metrics

from beam_gbif import METRICS_NAMESPACE
from beam_gbif.core.records import IN_DATASET, MediaRecord, Status
from beam_gbif.core.sniff import is_media_file_name
from beam_gbif.io.manifest_files import manifest_pattern
from beam_gbif.io.store import store_for
from beam_gbif.transforms.coders import MediaRecordCoder
from beam_gbif.transforms.spill import GroupByKeyOnDisk

# Who vouches for a path, strongest first: a result of this run, an earlier row, only the listing of the output.
_THIS_RUN, _EARLIER, _LISTED = 0, 1, 2
_WITH_FILE, _WITHOUT_FILE = "with_file", "without_file"

Ranked = tuple[int, MediaRecord]


@dataclasses.dataclass(frozen=True)
class CarryOverSettings:
    """``output``: the dataset root. ``earlier_manifest``: it has a manifest to read (known when the
    pipeline is built: reading a pattern that matches nothing fails). ``prune``: delete the files of
    earlier rows and files in no row, instead of keeping them. ``earlier_is_selection``: the earlier
    rows are this run's selection (a retry into its own output). ``scratch_dir``: the local
    runners' spill folder."""

    output: str
    earlier_manifest: bool = True
    prune: bool = False
    earlier_is_selection: bool = False
    scratch_dir: str | None = None


def _key_by_path(rank: int) -> Callable[[MediaRecord], tuple[str, Ranked]]:
    def key(record: MediaRecord) -> tuple[str, Ranked]:
        return record.path, (rank, record)

    return key


def _in_dataset(record: MediaRecord) -> bool:
    return record.status in IN_DATASET and bool(record.path)


def _split_results(record: MediaRecord) -> Iterable[beam.pvalue.TaggedOutput]:
    # Only results with a file can share a path with an earlier row; the others pass straight on.
    yield beam.pvalue.TaggedOutput(_WITH_FILE if _in_dataset(record) else _WITHOUT_FILE, record)


def _list_media_files(output: str) -> Iterable[MediaRecord]:
    """Every downloaded media file under ``output`` (by its name: the layout files and anything else are left alone)."""
    for rel in store_for(output).list():
        if "/" in rel and is_media_file_name(posixpath.basename(rel)):
            yield MediaRecord(url="", label="", occurrence_key=0, path=rel)


def _resolve(keyed: tuple[str, Iterable[Ranked]]) -> Iterable[Ranked]:
    """The strongest rank's rows of a path: all of this run's, else one (the manifest has one row per file)."""
    ranked = list(keyed[1])
    strongest = min(rank for rank, _ in ranked)
    rows = [entry for entry in ranked if entry[0] == strongest]
    yield from rows if strongest == _THIS_RUN else [min(rows, key=lambda entry: repr(entry[1]))]


class _KeepOrPrune(beam.DoFn):
    """This run's rows pass; an earlier row is kept while its file exists, or its file is pruned."""

    def __init__(self, settings: CarryOverSettings):
        self._settings = settings
        self._store = store_for(settings.output)
        self._kept = Metrics.counter(METRICS_NAMESPACE, "files_kept_from_earlier_run")
        self._pruned = Metrics.counter(METRICS_NAMESPACE, "files_pruned")
        self._missing = Metrics.counter(METRICS_NAMESPACE, "earlier_rows_without_file")

    def process(self, ranked: Ranked) -> Iterable[MediaRecord]:
        rank, record = ranked
        if rank == _THIS_RUN:
            yield record
        elif rank == _LISTED:  # listed only with prune: a file in no row of any manifest
            self._prune(record.path)
        elif not self._store.exists(record.path):
            self._missing.inc()
        elif self._settings.earlier_is_selection:
            yield record
        elif self._settings.prune:
            self._prune(record.path)
        else:
            self._kept.inc()
            yield record.replace(status=Status.KEPT_FROM_EARLIER_RUN)

    def _prune(self, rel: str) -> None:
        self._store.delete(rel)
        self._pruned.inc()


class CarryOverManifest(beam.PTransform):
    """This run's results + the earlier manifest's rows of files this run did not select (kept or pruned)."""

    def __init__(self, settings: CarryOverSettings):
        super().__init__()
        self._settings = settings
        ranked_record = coders.TupleCoder([coders.VarIntCoder(), MediaRecordCoder()])
        self._group_by_path = GroupByKeyOnDisk(settings.scratch_dir, value_coder=ranked_record)

    def expand(self, results: beam.PCollection) -> beam.PCollection:
        split = results | "WithFile" >> beam.FlatMap(_split_results).with_outputs(_WITH_FILE, _WITHOUT_FILE)
        keyed = [split[_WITH_FILE] | "KeyResults" >> beam.Map(_key_by_path(_THIS_RUN))]
        if self._settings.earlier_manifest:
            keyed.append(
                results.pipeline
                | "ReadEarlierManifest" >> beam.io.ReadFromAvro(manifest_pattern(self._settings.output))
                | "ToRecords" >> beam.Map(MediaRecord.from_dict)
                | "InDataset" >> beam.Filter(_in_dataset)
                | "KeyEarlier" >> beam.Map(_key_by_path(_EARLIER)))
        if self._settings.prune:
            keyed.append(
                results.pipeline
                | "Output" >> beam.Create([self._settings.output])
                | "ListMediaFiles" >> beam.FlatMap(_list_media_files)
                | "KeyListed" >> beam.Map(_key_by_path(_LISTED)))
        resolved = tuple(keyed) | "ByPath" >> self._group_by_path | "OneRowPerFile" >> beam.FlatMap(_resolve)
        kept = resolved | "KeepOrPrune" >> beam.ParDo(_KeepOrPrune(self._settings))
        return (kept, split[_WITHOUT_FILE]) | "WithResultsWithoutFile" >> beam.Flatten()
