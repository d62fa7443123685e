"""parquet: ``<split>/<split>-000000.parquet`` with the image bytes (``image``) and one column per record field."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any, BinaryIO

import pyarrow as pa  # a Beam dependency already
import pyarrow.parquet as pq

from beam_gbif.core.shards import PARQUET
from beam_gbif.transforms.formats.base import DatasetWriter, Sample

# Rows per row group: bounds the writer's memory to this many images, whatever --shard_size is.
ROW_GROUP = 256


def _schema(fields: dict[str, Any]) -> pa.Schema:
    """``image`` then the record's fields: whole numbers as int64, the rest as strings."""
    columns = [pa.field("image", pa.binary())]
    columns += [pa.field(name, pa.int64() if isinstance(value, int) else pa.string()) for name, value in fields.items()]
    return pa.schema(columns)


class ParquetWriter(DatasetWriter):
    name = PARQUET
    extension = "parquet"
    content_type = "application/vnd.apache.parquet"

    def write(self, out: BinaryIO, samples: Iterable[Sample]) -> None:
        iterator = iter(samples)
        writer = None
        while batch := list(itertools.islice(iterator, ROW_GROUP)):
            rows = [{"image": sample.image, **sample.fields()} for sample in batch]
            if writer is None:
                writer = pq.ParquetWriter(out, _schema(batch[0].fields()))
            writer.write_table(pa.Table.from_pylist(rows, schema=writer.schema))
        if writer is not None:
            writer.close()
