"""CarryOverManifest, row by row: which earlier rows are kept, which files pruned, joined by path; the summary counts them apart."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_gbif.core.records import MediaRecord, Status
from beam_gbif.transforms.manifest import ManifestSettings, WriteManifest, format_summary, read_attribution, read_manifest


def _row(name: str, split: str, status: str = Status.DOWNLOADED) -> MediaRecord:
    record = MediaRecord(url=f"http://127.0.0.1:1/{name}.jpg", label="sp", occurrence_key=len(name), split=split, license_code="CC0_1_0")
    if Status.is_failure(status):
        return record.replace(status=status, error="HTTP 404")
    return record.replace(status=status, path=f"{split}/sp/{record.basename}.jpg", bytes=4, sha256="cd" * 32, content_type="image/jpeg")


def _write(output: Path, records: list[MediaRecord], **settings: bool) -> None:
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        pipeline | beam.Create(records) | WriteManifest(ManifestSettings(output=str(output), **settings))


def _by_path(rows: list[MediaRecord]) -> list[MediaRecord]:
    return sorted(rows, key=lambda r: (r.url, r.path))  # "moved" has two rows: one URL, two files


def _earlier(output: Path) -> dict[str, MediaRecord]:
    rows = {
        "unselected": _row("unselected", "train"),  # this run does not select it: kept, or pruned
        "deleted": _row("deleted", "train", Status.SKIPPED_EXISTING),  # its file is gone since: no row
        "again": _row("again", "train"),  # selected again, same place: this run's row only
        "moved": _row("moved", "train"),  # selected again into another split: both files, both rows
        "failed": _row("failed", "train", Status.FAILED_HTTP),  # no file: nothing to carry
    }
    for record in rows.values():
        if record.path and record.url != rows["deleted"].url:
            (output / record.path).parent.mkdir(parents=True, exist_ok=True)
            (output / record.path).write_bytes(b"jpeg")
    _write(output, list(rows.values()))
    return rows


def _this_run(output: Path, earlier: dict[str, MediaRecord]) -> list[MediaRecord]:
    again = earlier["again"].replace(status=Status.SKIPPED_EXISTING)
    moved = _row("moved", "test")
    (output / moved.path).parent.mkdir(parents=True, exist_ok=True)
    (output / moved.path).write_bytes(b"jpeg")
    return [again, moved, _row("new", "test", Status.FAILED_HTTP)]


@pytest.mark.parametrize("prune", [False, True], ids=["keep", "prune"])
def test_earlier_rows_are_kept_while_their_file_exists_or_pruned(tmp_path: Path, prune: bool) -> None:
    earlier = _earlier(tmp_path)
    current = _this_run(tmp_path, earlier)
    _write(tmp_path, current, carry_over=True, prune=prune)
    carried = [] if prune else [earlier[name].replace(status=Status.KEPT_FROM_EARLIER_RUN) for name in ("unselected", "moved")]
    assert _by_path(read_manifest(str(tmp_path))) == _by_path(current + carried)
    for name in ("unselected", "moved"):
        assert (tmp_path / earlier[name].path).exists() is not prune
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.jpg"))
    assert sorted(row["path"] for row in read_attribution(str(tmp_path))) == files


def test_summary_counts_the_kept_files_apart() -> None:
    stats = {"records": 7, "files": 6, "failed": 1, "kept_from_earlier_run": 2, "seconds": 1.0,
             "by_status": {Status.DOWNLOADED: 4, Status.KEPT_FROM_EARLIER_RUN: 2, Status.FAILED_HTTP: 1}}
    summary = format_summary(stats)
    assert "5 records + 2 kept from earlier runs in 1.0 s: 6 files in the dataset, 1 failed" in summary
    assert "KEPT_FROM_EARLIER_RUN 2" in summary


def test_prune_deletes_media_files_in_no_row_and_nothing_else(tmp_path: Path) -> None:
    # A run killed before it wrote a manifest left files that no row names; the user's own files stay.
    orphan, moved_in = _row("orphan", "train"), _row("new", "test")
    theirs = ["notes.txt", "train/sp/notes.txt", f"{orphan.basename}.jpg"]
    for rel in [orphan.path, moved_in.path, *theirs]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    _write(tmp_path, [moved_in], prune=True)
    assert read_manifest(str(tmp_path)) == [moved_in]
    assert not (tmp_path / orphan.path).exists()
    assert (tmp_path / moved_in.path).exists() and all((tmp_path / rel).exists() for rel in theirs)
