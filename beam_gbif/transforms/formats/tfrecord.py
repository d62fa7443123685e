"""tfrecord: ``<split>/<split>-000000-of-NNNNNN.tfrecord``, one ``tf.train.Example`` per image with the keys
of TensorFlow's image datasets (``image/encoded``, ``image/class/label``, ...) and ``gbif/*`` for the rest."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import BinaryIO

from beam_gbif.core.shards import TFRECORD, shard_prefix
from beam_gbif.io.tfrecord import FeatureValue, example, frame
from beam_gbif.transforms.formats.base import DatasetWriter, Sample

# JPEG is the name TensorFlow's decoders use; other extensions are their own format name.
_FORMAT_NAMES = {"jpg": "JPEG", "jpeg": "JPEG"}


def features(sample: Sample) -> dict[str, FeatureValue]:
    record = sample.record
    values: dict[str, FeatureValue] = {
        "image/encoded": [sample.image],
        "image/format": [_FORMAT_NAMES.get(sample.ext, sample.ext.upper()).encode()],
        "image/height": [sample.height],
        "image/width": [sample.width],
        "image/class/label": [record.class_index],
        "image/class/text": [record.label.encode("utf-8")],
        "image/key/sha256": [hashlib.sha256(sample.image).hexdigest().encode()],
        "gbif/key": [record.key.encode()],
        "gbif/occurrence_key": [record.occurrence_key],
        "gbif/license": [record.license.encode("utf-8")],
        "gbif/url": [record.url.encode("utf-8")],
    }
    for name, value in record.extra:
        values.setdefault(f"gbif/{name}", [value.encode("utf-8")])
    return values


class TfRecordWriter(DatasetWriter):
    name = TFRECORD
    extension = "tfrecord"

    def shard_path(self, split: str, index: int, count: int) -> str:
        return f"{shard_prefix(split)}-{index:06d}-of-{count:06d}.{self.extension}"

    def write(self, out: BinaryIO, samples: Iterable[Sample]) -> None:
        for sample in samples:
            out.write(frame(example(features(sample))))
