"""The one interface of the dataset writers (one module per format, like img2dataset's writers).

A writer turns the ordered samples of one shard into the bytes of one file; WriteDataset
(transforms/dataset.py) decides membership, order and names, and publishes each file atomically.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

from beam_gbif.core.records import MediaRecord
from beam_gbif.core.shards import record_fields, shard_prefix
from beam_gbif.io.store import Store, write_local


@dataclasses.dataclass(frozen=True)
class Sample:
    """One stored image of a shard: its record (class index set), extension, bytes and size (0 when not read)."""

    record: MediaRecord
    ext: str
    image: bytes = b""
    width: int = 0
    height: int = 0

    @property
    def member(self) -> str:
        """The image's name inside a shard: the safe key, never the raw label."""
        return f"{self.record.key}.{self.ext}"

    def fields(self) -> dict[str, Any]:
        return record_fields(self.record, self.width, self.height)


class DatasetWriter:
    """Interface. ``sharded``: images go into shard files (fetched into the staging folder first);
    otherwise the images stay files of their own and the writer only adds a per-split file."""

    name = ""
    extension = ""
    content_type = "application/octet-stream"
    sharded = True

    def shard_path(self, split: str, index: int, count: int) -> str:
        """The shard's path relative to the root (``<split>/<split>-000000.<ext>``)."""
        return f"{shard_prefix(split)}-{index:06d}.{self.extension}"

    def is_shard_name(self, name: str) -> bool:
        """True for a file name this writer gives its shards (``train-000003.tar``, ``data-000000-of-000002.tfrecord``)."""
        return re.fullmatch(rf"[^/]+-\d{{6}}(-of-\d{{6}})?\.{re.escape(self.extension)}", name) is not None

    def write(self, out: BinaryIO, samples: Iterable[Sample]) -> None:
        """Writes the samples, in the given order, as one file to ``out``."""
        raise NotImplementedError


def write_filled(store: Store, rel: str, fill: Callable[[BinaryIO], Any], content_type: str) -> None:
    """The store's atomic write for a file written by ``fill``: streamed to a temp file and renamed
    locally; built in memory and sent as a single upload (replacing an earlier one) on GCS."""
    if store.is_local:
        final = store.uri(rel)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        write_local(final, fill, fsync=getattr(store, "fsync", True))
        return
    buffer = io.BytesIO()
    fill(buffer)
    store.write_atomic(rel, buffer.getvalue(), content_type, overwrite=True)
