"""Dataset-format rules (pure): output formats, the class index, seeded shard order and shard cuts, a record's fields.

Every format stores the same fields for a record (``record_fields``), so webdataset's json, the
parquet columns, the tfrecord ``gbif/*`` features and imagefolder's metadata.jsonl never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from beam_gbif.core.errors import OptionError
from beam_gbif.core.hashing import seeded_hash
from beam_gbif.core.records import MediaRecord

IMAGEFOLDER, WEBDATASET, TFRECORD, PARQUET = "imagefolder", "webdataset", "tfrecord", "parquet"
OUTPUT_FORMATS = (IMAGEFOLDER, WEBDATASET, TFRECORD, PARQUET)
DEFAULT_SHARD_SIZE = 1000
CLASSES_FILE = "classes.json"
# Where the sharded formats' downloads wait for their shard (a plain folder: io/leftovers.py only removes
# beam-temp-* folders and hidden .tmp files, never this). Removed once every shard is written.
STAGING_DIR = "_staging"
# Shards of a run without splits are named after this pseudo-split, in the root.
NO_SPLIT_NAME = "data"


def check_format(output_format: str, shard_size: int) -> None:
    if output_format not in OUTPUT_FORMATS:
        raise OptionError(f"--output_format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise OptionError(f"--shard_size must be a whole number of records, at least 1, got {shard_size!r}")


def class_indices(labels: Iterable[str]) -> dict[str, int]:
    """Raw label → 0..n-1 in the order of the sorted distinct labels (the same for every split and format)."""
    return {label: index for index, label in enumerate(sorted(set(labels)))}


def classes_json(indices: dict[str, int]) -> bytes:
    return (json.dumps(indices, ensure_ascii=False, indent=1, sort_keys=True) + "\n").encode("utf-8")


def shard_rank(seed: int, key: str) -> tuple[int, str]:
    """A record's place within its split: seeded, so any runner and worker count gives the same order (the key breaks ties)."""
    return seeded_hash(seed, key, purpose="shard-order"), key


def cut_shards(count: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, end) of each shard: every shard but the last holds ``shard_size`` records, the last 1..shard_size; none when empty."""
    return [(start, min(start + shard_size, count)) for start in range(0, count, shard_size)]


def split_folder(split: str) -> str:
    return split or NO_SPLIT_NAME


def shard_prefix(split: str) -> str:
    """``<split>/<split>`` (or ``data`` in the root without splits): a shard's path without its number and extension."""
    name = split_folder(split)
    return f"{name}/{name}" if split else name


def record_fields(record: MediaRecord, width: int = 0, height: int = 0) -> dict[str, Any]:
    """The fields every format stores for a record: ids, label and class index, licence, attribution, size, extra fields."""
    fields: dict[str, Any] = {
        "key": record.key, "url": record.url, "label": record.label, "class_index": record.class_index,
        "occurrence_key": record.occurrence_key, "license": record.license, "license_code": record.license_code,
        "rights_holder": record.rights_holder, "creator": record.creator, "publisher": record.publisher,
        "references": record.references, "dataset_key": record.dataset_key, "sha256": record.sha256,
        "width": width, "height": height,
    }
    for name, value in record.extra:
        fields.setdefault(name, value)  # an extra field never hides one of ours (``license`` stays the raw licence)
    return fields
