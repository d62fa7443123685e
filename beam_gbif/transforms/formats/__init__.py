"""The dataset writers, one module per format, behind one interface (base.DatasetWriter)."""

from __future__ import annotations

from beam_gbif.core.shards import OUTPUT_FORMATS
from beam_gbif.transforms.formats.base import DatasetWriter, Sample, write_filled
from beam_gbif.transforms.formats.imagefolder import ImageFolderWriter
from beam_gbif.transforms.formats.parquet import ParquetWriter
from beam_gbif.transforms.formats.tfrecord import TfRecordWriter
from beam_gbif.transforms.formats.webdataset import WebDatasetWriter

__all__ = ["DatasetWriter", "Sample", "WRITERS", "writer_for", "write_filled"]

WRITERS: dict[str, type[DatasetWriter]] = {
    writer.name: writer for writer in (ImageFolderWriter, WebDatasetWriter, TfRecordWriter, ParquetWriter)
}
assert tuple(WRITERS) == OUTPUT_FORMATS


def writer_for(output_format: str) -> DatasetWriter:
    return WRITERS[output_format]()
