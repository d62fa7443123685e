"""Reading a dataset's manifest (Avro shards), ATTRIBUTION.csv and its layout names, local or gs://.

Written by transforms/manifest.py; read back by --retry_failed_from, the carry-over and tests.
"""

from __future__ import annotations

import csv
import io
import os

import fastavro
from apache_beam.io.filesystems import FileSystems

from beam_gbif.core.records import MediaRecord
from beam_gbif.io.store import join_uri

MANIFEST_DIR = "manifest"
ATTRIBUTION_FILE = "ATTRIBUTION.csv"


def manifest_pattern(output: str) -> str:
    """The glob of a dataset's manifest shards (written here; --retry_failed_from and the carry-over read them)."""
    return join_uri(output, MANIFEST_DIR, "*.avro")


def manifest_paths(output: str) -> list[str]:
    matches = FileSystems.match([manifest_pattern(output)])
    return sorted(m.path for result in matches for m in result.metadata_list)


def has_manifest(output: str) -> bool:
    """True when ``output`` already holds a manifest (a rerun into it carries the rows over)."""
    return bool(manifest_paths(output))


def read_manifest(output: str) -> list[MediaRecord]:
    """Every manifest row under ``output`` (local or gs://), sorted by URL."""
    rows = []
    for path in manifest_paths(output):
        with FileSystems.open(path) as handle:
            rows.extend(MediaRecord.from_dict(row) for row in fastavro.reader(handle))
    return sorted(rows, key=lambda record: (record.url, record.occurrence_key))


def read_attribution(output: str) -> list[dict[str, str]]:
    """ATTRIBUTION.csv as dicts (for tests and tools)."""
    with FileSystems.open(join_uri(output, ATTRIBUTION_FILE)) as handle:
        return list(csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8", newline="")))


def same_root(first: str, second: str) -> bool:
    if "://" in first or "://" in second:
        return first.rstrip("/") == second.rstrip("/")
    return os.path.realpath(first) == os.path.realpath(second)
