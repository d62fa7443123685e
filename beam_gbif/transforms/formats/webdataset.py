"""webdataset: ``<split>/<split>-000000.tar`` with ``<key>.<ext>``, ``<key>.json`` and ``<key>.cls`` per sample."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from beam_gbif.core.shards import WEBDATASET
from beam_gbif.io.tar_entries import write_tar
from beam_gbif.transforms.formats.base import DatasetWriter, Sample


def _members(samples: Iterable[Sample]) -> Iterator[tuple[str, bytes]]:
    for sample in samples:
        key = sample.record.key
        yield sample.member, sample.image
        yield f"{key}.json", json.dumps(sample.fields(), ensure_ascii=False, sort_keys=True).encode("utf-8")
        yield f"{key}.cls", str(sample.record.class_index).encode("ascii")


class WebDatasetWriter(DatasetWriter):
    name = WEBDATASET
    extension = "tar"
    content_type = "application/x-tar"

    def write(self, out: BinaryIO, samples: Iterable[Sample]) -> None:
        write_tar(out, _members(samples))
