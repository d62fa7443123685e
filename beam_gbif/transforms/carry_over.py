"""CarryOverManifest: a rerun into an output that already has a manifest keeps the folder and its manifest in step.

A run with another selection (another seed, quota or query) leaves the earlier run's files on disk.
Each earlier manifest row of a file in the dataset (DOWNLOADED, SKIPPED_EXISTING or
KEPT_FROM_EARLIER_RUN) whose path no result of this run holds describes such a file. While the file
still exists (checked through the Store), its row joins this run's as KEPT_FROM_EARLIER_RUN, so it
keeps its manifest and ATTRIBUTION.csv rows; with ``prune`` the file is deleted instead and gets no
row. A row whose file is gone is dropped.

``earlier_is_selection``: a ``--retry_failed_from`` into its own output downloads only the earlier
failures, yet the earlier rows are still this run's selection: they keep their status and are
never pruned.

Rows are joined by path, not URL: a URL this run places elsewhere (another split) leaves its
earlier file where it was, and that file keeps its own row.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable

import apache_beam as beam
from apache_beam import coders
from apache_beam.metrics import Metrics

from beam_gbif import METRICS_NAMESPACE
from beam_gbif.core.records import IN_DATASET, MediaRecord, Status
from beam_gbif.io.manifest_files import manifest_pattern
from beam_gbif.io.store import store_for
from beam_gbif.transforms.coders import MediaRecordCoder
from beam_gbif.transforms.spill import GroupByKeyOnDisk

_LOG = logging.getLogger(__name__)

_THIS_RUN, _EARLIER = 0, 1
_WITH_FILE, _WITHOUT_FILE = "with_file", "without_file"


@dataclasses.dataclass(frozen=True)
class CarryOverSettings:
    """``output``: the dataset root whose manifest is read. ``prune``: delete the files of earlier rows
    instead of keeping them. ``earlier_is_selection``: the earlier rows are this run's selection
    (a retry into its own output). ``scratch_dir``: the local runners' spill folder."""

    output: str
    prune: bool = False
    earlier_is_selection: bool = False
    scratch_dir: str | None = None


def _key_by_path(rank: int) -> Callable[[MediaRecord], tuple[str, tuple[int, MediaRecord]]]:
    def key(record: MediaRecord) -> tuple[str, tuple[int, MediaRecord]]:
        return record.path, (rank, record)

    return key


def _in_dataset(record: MediaRecord) -> bool:
    return record.status in IN_DATASET and bool(record.path)


def _split_results(record: MediaRecord) -> Iterable[beam.pvalue.TaggedOutput]:
    # Only results with a file can share a path with an earlier row; the others pass straight on.
    yield beam.pvalue.TaggedOutput(_WITH_FILE if _in_dataset(record) else _WITHOUT_FILE, record)


def _resolve(keyed: tuple[str, Iterable[tuple[int, MediaRecord]]]) -> Iterable[tuple[int, MediaRecord]]:
    """This run's rows of a path if it has any; else one earlier row (the manifest has one row per file)."""
    ranked = list(keyed[1])
    current = [entry for entry in ranked if entry[0] == _THIS_RUN]
    if current:
        yield from current
    else:
        yield min(ranked, key=lambda entry: repr(entry[1]))


class _KeepOrPrune(beam.DoFn):
    """This run's rows pass; an earlier row is kept while its file exists, or its file is pruned."""

    def __init__(self, settings: CarryOverSettings):
        self._settings = settings
        self._store = store_for(settings.output)
        self._kept = Metrics.counter(METRICS_NAMESPACE, "files_kept_from_earlier_run")
        self._pruned = Metrics.counter(METRICS_NAMESPACE, "files_pruned")
        self._missing = Metrics.counter(METRICS_NAMESPACE, "earlier_rows_without_file")

    def process(self, ranked: tuple[int, MediaRecord]) -> Iterable[MediaRecord]:
        rank, record = ranked
        if rank == _THIS_RUN:
            yield record
            return
        if not self._store.exists(record.path):
            self._missing.inc()
            return
        if self._settings.earlier_is_selection:
            yield record
        elif self._settings.prune:
            self._store.delete(record.path)
            self._pruned.inc()
        else:
            self._kept.inc()
            yield record.replace(status=Status.KEPT_FROM_EARLIER_RUN)


class CarryOverManifest(beam.PTransform):
    """This run's results + the earlier manifest's rows of files this run did not select (kept or pruned)."""

    def __init__(self, settings: CarryOverSettings):
        super().__init__()
        self._settings = settings
        ranked_record = coders.TupleCoder([coders.VarIntCoder(), MediaRecordCoder()])
        self._group_by_path = GroupByKeyOnDisk(settings.scratch_dir, value_coder=ranked_record)

    def expand(self, results: beam.PCollection) -> beam.PCollection:
        earlier = (
            results.pipeline
            | "ReadEarlierManifest" >> beam.io.ReadFromAvro(manifest_pattern(self._settings.output))
            | "ToRecords" >> beam.Map(MediaRecord.from_dict)
            | "InDataset" >> beam.Filter(_in_dataset)
            | "KeyEarlier" >> beam.Map(_key_by_path(_EARLIER))
        )
        split = results | "WithFile" >> beam.FlatMap(_split_results).with_outputs(_WITH_FILE, _WITHOUT_FILE)
        with_file = split[_WITH_FILE] | "KeyResults" >> beam.Map(_key_by_path(_THIS_RUN))
        resolved = (with_file, earlier) | "ByPath" >> self._group_by_path | "OneRowPerFile" >> beam.FlatMap(_resolve)
        kept = resolved | "KeepOrPrune" >> beam.ParDo(_KeepOrPrune(self._settings))
        return (kept, split[_WITHOUT_FILE]) | "WithResultsWithoutFile" >> beam.Flatten()
