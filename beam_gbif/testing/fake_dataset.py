"""A dataset as a run leaves it (media files and a manifest), written directly: for inspect's tests and benchmark."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import fastavro

from beam_gbif.core.records import MediaRecord, Status
from beam_gbif.io.manifest_files import MANIFEST_DIR
from beam_gbif.transforms.manifest import manifest_schema


def write_fake_dataset(root: Path, files: int, labels: int = 10, size: int = 2048) -> list[MediaRecord]:
    """``files`` distinct files at ``train/<label>/<sha1>.jpg`` and one manifest shard listing them; returns the rows."""
    rows = []
    for number in range(files):
        url = f"http://127.0.0.1:9/media/{number}.jpg"
        basename = hashlib.sha1(url.encode()).hexdigest()
        label = f"label{number % labels}"
        body = number.to_bytes(8, "big") * (size // 8)
        path = f"train/{label}/{basename}.jpg"
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        rows.append(MediaRecord(url=url, label=label, occurrence_key=number + 1, label_dir=label, basename=basename, split="train",
                                status=Status.DOWNLOADED, path=path, bytes=len(body), sha256=hashlib.sha256(body).hexdigest(),
                                dataset_key=f"dataset{number % 3}"))
    os.makedirs(root / MANIFEST_DIR, exist_ok=True)
    with open(root / MANIFEST_DIR / "part-fake-00000-of-00001.avro", "wb") as handle:
        fastavro.writer(handle, manifest_schema(), (row.to_dict() for row in rows))
    return rows
