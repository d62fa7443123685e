"""imagefolder: the images stay at ``<split>/<label_dir>/<key>.<ext>``; each split gets a ``metadata.jsonl``
(Hugging Face's imagefolder loader reads its ``file_name`` and joins the other columns to the image)."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable
from typing import BinaryIO

from beam_gbif.core.shards import IMAGEFOLDER
from beam_gbif.transforms.formats.base import DatasetWriter, Sample

METADATA_FILE = "metadata.jsonl"


class ImageFolderWriter(DatasetWriter):
    name = IMAGEFOLDER
    extension = "jsonl"
    content_type = "application/jsonl"
    sharded = False

    def shard_path(self, split: str, index: int, count: int) -> str:
        return f"{split}/{METADATA_FILE}" if split else METADATA_FILE

    def write(self, out: BinaryIO, samples: Iterable[Sample]) -> None:
        for sample in samples:
            record = sample.record
            fields = sample.fields()
            del fields["width"], fields["height"]  # the images are not read for imagefolder
            # Relative to the split folder (the metadata file's own folder), as the loader expects.
            start = record.split if record.split else ""
            row = {"file_name": posixpath.relpath(record.path, start) if start else record.path, **fields}
            out.write((json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8"))
