"""WriteDataset: download results → the dataset in its output format, plus ``classes.json``.

``classes.json`` maps every raw label of the selected records to its index (sorted labels), the
same for all splits and formats. Stored images are grouped per split, ordered by a seeded rank of
their key (core/shards.py) and cut into shards of exactly ``shard_size`` (the last one 1..shard_size),
so the same inputs and seed give the same shards on any runner and worker count. Each shard is
written by one writer (transforms/formats/) and published atomically (temp file + rename locally,
a single upload on GCS).

The sharded formats download into ``OUTPUT/_staging/`` first: a killed run's rerun finds those files
(SKIPPED_EXISTING, no request) and writes every shard again, and the staging folder is removed only
once every shard is written. A split's records (not their images) are held by one worker while its
shards are cut; images are read from the staging folder one at a time while a shard is written.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam

from beam_gbif.core.errors import OptionError
from beam_gbif.core.image_size import image_size
from beam_gbif.core.records import IN_DATASET, MediaRecord
from beam_gbif.core.shards import (
    CLASSES_FILE,
    DEFAULT_SHARD_SIZE,
    IMAGEFOLDER,
    STAGING_DIR,
    check_format,
    class_indices,
    classes_json,
    cut_shards,
    shard_rank,
)
from beam_gbif.io.store import join_uri, store_for
from beam_gbif.transforms.formats import Sample, write_filled, writer_for

__all__ = ["DatasetSettings", "WriteDataset", "staging_root"]

_LOG = logging.getLogger(__name__)

# Staged images read at once while a shard is written: bounds the memory to this many images.
READ_AHEAD = 16


def staging_root(output: str, output_format: str) -> str:
    """Where DownloadMedia writes: the dataset root for imagefolder, its staging folder for the sharded formats."""
    return output if output_format == IMAGEFOLDER else join_uri(output, STAGING_DIR)


@dataclasses.dataclass(frozen=True)
class DatasetSettings:
    """``output``: the dataset root. ``output_format``: one of core/shards.py's OUTPUT_FORMATS.
    ``shard_size``: records per shard (sharded formats). ``seed``: orders records within a split."""

    output: str = ""
    output_format: str = IMAGEFOLDER
    shard_size: int = DEFAULT_SHARD_SIZE
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.output:
            raise OptionError("--output is required: a local folder or gs://bucket/prefix for the dataset")
        check_format(self.output_format, self.shard_size)

    @property
    def staging(self) -> str:
        return staging_root(self.output, self.output_format)


def plan_shards(element: tuple[str, Iterable[MediaRecord]], settings: DatasetSettings) -> Iterator[tuple[str, list[MediaRecord]]]:
    """(split, its stored records) → (shard path, its records in order) for each shard of the split."""
    split, records = element
    writer = writer_for(settings.output_format)
    ordered = sorted(records, key=lambda record: shard_rank(settings.seed, record.key))
    if not writer.sharded:  # one file per split: ordered by file name, as a person would read it
        yield writer.shard_path(split, 0, 1), sorted(ordered, key=lambda record: record.path)
        return
    cuts = cut_shards(len(ordered), settings.shard_size)
    for index, (start, end) in enumerate(cuts):
        yield writer.shard_path(split, index, len(cuts)), ordered[start:end]


class _WriteShardFn(beam.DoFn):
    """(shard path, records) → the shard file; emits each record with its shard and its path inside it."""

    def __init__(self, settings: DatasetSettings) -> None:
        self.settings = settings

    def setup(self) -> None:
        self._store = store_for(self.settings.output)
        self._staging = store_for(self.settings.staging)
        self._writer = writer_for(self.settings.output_format)
        self._readers = ThreadPoolExecutor(READ_AHEAD, thread_name_prefix="beam-gbif-shard-read")

    def teardown(self) -> None:
        self._readers.shutdown(wait=True)

    def _images(self, records: list[MediaRecord]) -> Iterator[bytes]:
        """The staged images in order, READ_AHEAD read at once (a GCS read is a request: in a row they would dominate)."""
        for start in range(0, len(records), READ_AHEAD):
            yield from self._readers.map(self._staging.read, [record.path for record in records[start:start + READ_AHEAD]])

    def _samples(self, records: list[MediaRecord]) -> Iterator[Sample]:
        if not self._writer.sharded:
            yield from map(_without_image, records)
            return
        for record, image in zip(records, self._images(records), strict=True):
            width, height = image_size(image)
            yield dataclasses.replace(_without_image(record), image=image, width=width, height=height)

    def process(self, element: tuple[str, list[MediaRecord]]) -> Iterator[MediaRecord]:
        shard, records = element
        writer = self._writer
        started = time.monotonic()
        write_filled(self._store, shard, lambda out: writer.write(out, self._samples(records)), writer.content_type)
        _LOG.info("dataset: %s written (%d records) in %.2f s", shard, len(records), time.monotonic() - started)
        for record in records:
            # The manifest's path of a sharded record: its image's member name inside the shard.
            yield record.replace(shard=shard, path=_without_image(record).member) if writer.sharded else record


def _without_image(record: MediaRecord) -> Sample:
    """The record's sample before its bytes are read: the extension is the staged (or stored) file's."""
    return Sample(record, record.path.rpartition(".")[2])


def _write_classes(labels: list[str], output: str) -> dict[str, int]:
    indices = class_indices(labels)
    store = store_for(output)
    store.write_atomic(CLASSES_FILE, classes_json(indices), "application/json", overwrite=True)
    return indices


def _finish(shards: list[str], settings: DatasetSettings) -> None:
    """Once every shard is written: the staging folder goes, and so do shards of an earlier run this run did not
    write again (a run with fewer records, or another count in tfrecord's ``-of-NNNNNN``), in this run's folders."""
    writer = writer_for(settings.output_format)
    if not writer.sharded:
        return
    store = store_for(settings.output)
    store.delete_folder(STAGING_DIR)
    written = set(shards)
    for folder in sorted({posixpath.dirname(shard) for shard in written}):
        for name in store.list_dir(folder):
            rel = posixpath.join(folder, name)
            if rel not in written and writer.is_shard_name(name):
                store.delete(rel)


def _with_class_index(record: MediaRecord, indices: dict[str, int]) -> MediaRecord:
    return record.replace(class_index=indices[record.label])


class WriteDataset(beam.PTransform):
    """Download results → classes.json and the dataset files; returns every record, class index (and shard) set."""

    def __init__(self, settings: DatasetSettings) -> None:
        super().__init__()
        self.settings = settings

    def expand(self, results: beam.PCollection) -> beam.PCollection:
        settings = self.settings
        classes = (results
                   | "Labels" >> beam.Map(lambda record: record.label)
                   | "DistinctLabels" >> beam.Distinct()
                   | "AllLabels" >> beam.combiners.ToList()
                   | "WriteClasses" >> beam.Map(_write_classes, settings.output))
        indexed = results | "ClassIndex" >> beam.Map(_with_class_index, beam.pvalue.AsSingleton(classes))
        stored = indexed | "Stored" >> beam.Filter(lambda record: record.status in IN_DATASET)
        others = indexed | "NotStored" >> beam.Filter(lambda record: record.status not in IN_DATASET)
        written = (stored
                   | "BySplit" >> beam.Map(lambda record: (record.split, record)).with_output_types(tuple[str, MediaRecord])
                   | "GroupBySplit" >> beam.GroupByKey()
                   | "CutShards" >> beam.FlatMap(plan_shards, settings)
                   | "SpreadShards" >> beam.Reshuffle()
                   | "WriteShards" >> beam.ParDo(_WriteShardFn(settings)).with_output_types(MediaRecord))
        # Only once every shard exists: until then a rerun needs the staged files to avoid fetching them again.
        _ = (written
             | "ShardNames" >> beam.Map(lambda record: record.shard)
             | "DistinctShards" >> beam.Distinct()
             | "AllShards" >> beam.combiners.ToList()
             | "RemoveStaging" >> beam.Map(_finish, settings))
        return (written, others) | "AllRecords" >> beam.Flatten()


