"""ReadUrlList: CSV/TSV/plain URL lists → records; --retry_failed_from → the failures, and the manifest stays whole."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_gbif.core.errors import OptionError
from beam_gbif.core.records import MediaRecord, Status
from beam_gbif.transforms.manifest import ManifestSettings, WriteManifest, read_attribution, read_manifest
from beam_gbif.transforms.sources.list_rows import MAX_CELL_CHARS, MAX_LINE_CHARS
from beam_gbif.transforms.sources.url_list import (
    DEFAULT_LABEL,
    MAX_URL_CHARS,
    ReadUrlList,
    UrlListSettings,
    reset_for_retry,
    synthetic_occurrence_key,
)
from pipelines import stages
from pipelines.options import GbifMediaOptions

RUNNER = ["--runner=FnApiRunner"]


# The FnApiRunner runs in this process, so a module-level list sees what the pipeline emitted
# (a closure would be pickled and collect into a copy).
_COLLECTED: list[MediaRecord] = []


def _collect(records: list[MediaRecord]) -> None:
    _COLLECTED.extend(records)


def read_records(transform: ReadUrlList) -> list[MediaRecord]:
    """Runs the source in a real pipeline and returns what it emitted, sorted by URL."""
    _COLLECTED.clear()
    with beam.Pipeline(options=PipelineOptions(RUNNER)) as pipeline:
        _ = pipeline | transform | beam.combiners.ToList() | beam.Map(_collect)
    return sorted(_COLLECTED, key=lambda r: r.url)


def options_for(*argv: str) -> GbifMediaOptions:
    return PipelineOptions(list(argv)).view_as(GbifMediaOptions)


def test_csv_with_header_and_optional_columns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text(
        "url,label,split,license,creator,gbifID,datasetKey\n"
        "http://127.0.0.1:1/a.jpg,Amanita muscaria,test,CC BY 4.0,\"Doe, Jane\",1234,ds1\n"
        "\n"
        "http://127.0.0.1:1/b.jpg,5352251,,http://creativecommons.org/publicdomain/zero/1.0/,,,\n"
        ",nolabel,,,,,\n"  # line 5: no URL
        "not a url,x,,,,,\n"  # line 6
        "http://127.0.0.1:1/c.jpg,too,few\n"  # line 7: wrong cell count
        "http://127.0.0.1:1/d.jpg,,train,,,notanumber,\n"  # line 8: bad key
        "http://127.0.0.1:1/e.jpg,,,,,,\n",
        encoding="utf-8",
    )
    caplog.set_level(logging.WARNING)
    records = read_records(ReadUrlList(UrlListSettings(input=str(listing))))
    assert [r.url for r in records] == ["http://127.0.0.1:1/a.jpg", "http://127.0.0.1:1/b.jpg", "http://127.0.0.1:1/e.jpg"]
    a, b, e = records
    assert (a.label, a.split, a.license_code, a.creator, a.occurrence_key, a.dataset_key) == (
        "Amanita muscaria", "test", "CC_BY_4_0", "Doe, Jane", 1234, "ds1")
    assert a.label_dir != "Amanita muscaria" and "/" not in a.label_dir
    assert a.source == f"urls:{listing}"
    assert (b.label, b.split, b.license_code) == ("5352251", "", "CC0_1_0")
    assert b.occurrence_key == synthetic_occurrence_key(b.url) < 0
    assert (e.label, e.license_code, e.media_type) == (DEFAULT_LABEL, "UNKNOWN", "StillImage")
    assert e.status == "" and e.basename == MediaRecord(url=e.url, label="x", occurrence_key=0).basename
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    expected = {5: "no URL", 6: "not an absolute URL", 7: "3 cells where the header has 7", 8: "occurrence key is not an integer"}
    for line, reason in expected.items():
        assert f"line {line}: skipped, {reason}" in warnings
    assert "4 bad row(s) skipped" in warnings


def test_tsv_with_label_field_and_streams(tmp_path: Path) -> None:
    listing = tmp_path / "list.tsv"
    listing.write_text(
        "\ufeffidentifier\tspeciesKey\tdatasetKey\tlicense\n"
        "http://127.0.0.1:1/1.png\t5352251\tds-a\tCC-BY-NC 4.0\n"
        "http://127.0.0.1:1/2.png\t3190653\tds-b\tAll rights reserved\n",
        encoding="utf-8",
    )
    transform = stages.read_url_list(options_for("--source=urls", f"--input={listing}", "--label_field=speciesKey",
                                                     "--split_streams_by=speciesKey,datasetKey"))
    one, two = read_records(transform)
    assert (one.label, one.stream, one.license_code) == ("5352251", ("5352251", "ds-a"), "CC_BY_NC_4_0")
    assert (two.label, two.stream, two.license_code) == ("3190653", ("3190653", "ds-b"), "ALL_RIGHTS_RESERVED")


def test_one_url_per_line(tmp_path: Path) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text("# my urls\nhttp://127.0.0.1:1/x.jpg\n\n  https://127.0.0.1:1/y.jpg  \n", encoding="utf-8")
    records = read_records(ReadUrlList(UrlListSettings(input=str(listing))))
    assert [r.url for r in records] == ["http://127.0.0.1:1/x.jpg", "https://127.0.0.1:1/y.jpg"]
    assert {r.label for r in records} == {DEFAULT_LABEL}
    assert len({r.occurrence_key for r in records}) == 2  # no shared "occurrence", so splits spread them


def test_synthetic_keys_are_stable_across_processes() -> None:
    # Fixed value: blake2b of the URL, never Python's salted hash().
    assert synthetic_occurrence_key("http://127.0.0.1:1/x.jpg") == -2776633429459943775


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name,label\nfoo,bar\n", "neither a URL nor a header with a 'url' column"),
        ("\n# only a comment\n", "has no URLs"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    listing = tmp_path / "bad.csv"
    listing.write_text(content, encoding="utf-8")
    with pytest.raises(OptionError, match=message):
        ReadUrlList(UrlListSettings(input=str(listing)))


def test_an_over_long_first_line_is_a_clear_error_naming_the_line(tmp_path: Path) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text("# exported\n" + "u" * (MAX_LINE_CHARS + 1) + "\nhttp://127.0.0.1:1/a.jpg\n", encoding="utf-8")
    with pytest.raises(OptionError, match=f"--input {listing} line 2: longer than {MAX_LINE_CHARS} characters"):
        ReadUrlList(UrlListSettings(input=str(listing)))


def test_missing_file_and_missing_arguments(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="no such file"):
        ReadUrlList(UrlListSettings(input=str(tmp_path / "absent.csv")))
    with pytest.raises(OptionError, match="exactly one of --input"):
        UrlListSettings()
    with pytest.raises(OptionError, match="no manifest found"):
        ReadUrlList(UrlListSettings(retry_failed_from=str(tmp_path)))
    with pytest.raises(OptionError, match=f"--input {tmp_path}: cannot read it \\(IsADirectoryError"):
        ReadUrlList(UrlListSettings(input=str(tmp_path)))


def _earlier_run(output: Path) -> list[MediaRecord]:
    statuses = [Status.DOWNLOADED, Status.FAILED_HTTP, Status.SKIPPED_EXISTING, Status.FAILED_TIMEOUT]
    records = []
    for i, status in enumerate(statuses):
        record = MediaRecord(url=f"http://127.0.0.1:1/{i}.jpg", label=f"sp{i}", occurrence_key=10 + i, split="test" if i % 2 else "train",
                             license_code="CC_BY_4_0", source="api", stream=(f"sp{i}",))
        if Status.is_failure(status):
            record = record.replace(status=status, error="HTTP 503 after 3 retries")
        else:
            record = record.replace(status=status, path=f"{record.split}/{record.label_dir}/{record.basename}.jpg", bytes=100 + i,
                                    sha256="ab" * 32, content_type="image/jpeg")
            (output / record.path).parent.mkdir(parents=True, exist_ok=True)
            (output / record.path).write_bytes(b"x" * record.bytes)  # the file its row describes
        records.append(record)
    with beam.Pipeline(options=PipelineOptions(RUNNER)) as pipeline:
        pipeline | beam.Create(records) | WriteManifest(ManifestSettings(output=str(output)))
    return records


def test_retry_failed_from_yields_the_failures_ready_to_download(tmp_path: Path) -> None:
    earlier = _earlier_run(tmp_path)
    failed = [r for r in earlier if Status.is_failure(r.status)]
    transform = stages.read_url_list(options_for(f"--retry_failed_from={tmp_path}", f"--output={tmp_path}"))
    retried = read_records(transform)
    assert retried == sorted((reset_for_retry(r) for r in failed), key=lambda r: r.url)
    for record, original in zip(retried, sorted(failed, key=lambda r: r.url), strict=True):
        assert (record.status, record.error, record.path, record.bytes) == ("", "", "", 0)
        assert (record.split, record.label, record.stream, record.occurrence_key) == (original.split, original.label, original.stream,
                                                                                      original.occurrence_key)


@pytest.mark.parametrize("prune", [False, True], ids=["keep", "prune"])
def test_retry_into_the_same_output_keeps_the_manifest_whole(tmp_path: Path, prune: bool) -> None:
    # The earlier rows are the retry's own selection: kept as they were, never pruned.
    earlier = _earlier_run(tmp_path)
    options = options_for(f"--retry_failed_from={tmp_path}", f"--output={tmp_path}", f"--prune={prune}")
    retried = [reset_for_retry(r) for r in earlier if Status.is_failure(r.status)]
    # This run: one failure now downloads, the other fails again.
    fixed = retried[0].replace(status=Status.DOWNLOADED, path=f"test/{retried[0].label_dir}/{retried[0].basename}.jpg", bytes=7)
    again = retried[1].replace(status=Status.FAILED_TIMEOUT, error="timed out")
    with beam.Pipeline(options=PipelineOptions(RUNNER)) as pipeline:
        pipeline | beam.Create([fixed, again]) | stages.write_manifest(options)
    expected = [r for r in earlier if not Status.is_failure(r.status)] + [fixed, again]
    assert read_manifest(str(tmp_path)) == sorted(expected, key=lambda r: (r.url, r.occurrence_key))
    assert all((tmp_path / r.path).is_file() for r in earlier if r.path)


def test_retry_into_another_output_holds_only_the_retried_rows(tmp_path: Path) -> None:
    earlier = _earlier_run(tmp_path / "first")
    options = options_for(f"--retry_failed_from={tmp_path / 'first'}", f"--output={tmp_path / 'second'}")
    retried = [reset_for_retry(r).replace(status=Status.FAILED_HTTP) for r in earlier if Status.is_failure(r.status)]
    with beam.Pipeline(options=PipelineOptions(RUNNER)) as pipeline:
        pipeline | beam.Create(retried) | stages.write_manifest(options)
    assert read_manifest(str(tmp_path / "second")) == sorted(retried, key=lambda r: (r.url, r.occurrence_key))
    assert len(read_manifest(str(tmp_path / "first"))) == 4


@pytest.fixture
def gcs() -> Iterator[Any]:
    """The GCS emulator (which also makes Beam's GCS filesystem anonymous while it runs)."""
    from beam_gbif.testing.gcs_emulator import GcsEmulator

    with GcsEmulator(bucket="url-list-test") as emulator:
        yield emulator


def test_list_and_retry_on_gcs(gcs: Any) -> None:
    from beam_gbif.io.store import gcs_client

    bucket = gcs_client().bucket(gcs.bucket)
    bucket.blob("lists/urls.tsv").upload_from_string("url\tlabel\nhttp://127.0.0.1:1/a.jpg\tx\nhttp://127.0.0.1:1/b.jpg\ty\n")
    listing = f"gs://{gcs.bucket}/lists/urls.tsv"
    records = read_records(ReadUrlList(UrlListSettings(input=listing)))
    assert [(r.url, r.label, r.source) for r in records] == [("http://127.0.0.1:1/a.jpg", "x", f"urls:{listing}"),
                                                              ("http://127.0.0.1:1/b.jpg", "y", f"urls:{listing}")]
    output = f"gs://{gcs.bucket}/dataset"
    failed = records[0].replace(status=Status.FAILED_CONNECTION, error="refused")
    done = records[1].replace(status=Status.DOWNLOADED, path="y/b.jpg", bytes=3)
    with beam.Pipeline(options=PipelineOptions(RUNNER)) as pipeline:
        pipeline | beam.Create([failed, done]) | WriteManifest(ManifestSettings(output=output))
    assert read_records(ReadUrlList(UrlListSettings(retry_failed_from=output + "/"))) == [records[0]]  # as listed, before its download


def test_bad_rows_are_counted_in_beam_metrics_and_reach_stats(tmp_path: Path) -> None:
    from beam_gbif.transforms.manifest import finalize_stats, metric_counters

    listing = tmp_path / "list.csv"
    listing.write_text("url,label\nhttp://127.0.0.1:1/a.jpg,a\n,b\nnot-a-url,c\n", encoding="utf-8")
    pipeline = beam.Pipeline(options=PipelineOptions(RUNNER))
    _ = pipeline | ReadUrlList(UrlListSettings(input=str(listing))) | WriteManifest(ManifestSettings(output=str(tmp_path / "out")))
    result = pipeline.run()
    result.wait_until_finish()
    counters = metric_counters(result)
    assert counters["url_list_bad_rows"] == 2
    stats = finalize_stats(str(tmp_path / "out"), counters, 1.0)
    assert stats["records"] == 1 and stats["counters"]["url_list_bad_rows"] == 2


def test_dataflow_workers_need_gcs_paths(tmp_path: Path) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text("http://127.0.0.1:1/a.jpg\n", encoding="utf-8")
    dataflow = ("--runner=DataflowRunner", "--output=gs://b/out")
    with pytest.raises(OptionError, match="--input .* cannot reach a path on this machine; use gs://"):
        stages.read_url_list(options_for(*dataflow, f"--input={listing}"))
    with pytest.raises(OptionError, match="--output .* cannot reach a path on this machine"):
        stages.write_manifest(options_for("--runner=DataflowRunner", f"--output={tmp_path}"))
    with pytest.raises(OptionError, match="--input .* cannot reach a path on this machine"):
        stages.read_url_list(options_for("--runner=dataflow", f"--input={listing}"))  # Beam's short name of the same runner
    for local in ("--runner=FnApiRunner", "--runner=direct", "--runner=apache_beam.runners.direct.direct_runner.SwitchingDirectRunner"):
        assert stages.read_url_list(options_for(local, f"--input={listing}"))  # local runners read local files


# ----------------------------------------------------------------------------- rows that cannot be read


def _run_list(listing: Path, output: Path) -> int:
    from pipelines.gbif_media import run

    return run(["--source=urls", f"--input={listing}", f"--output={output}", "--allow_private_hosts", "--runner=FnApiRunner"])


def _check_unreadable_rows(output: Path, listing: Path, expected: dict[int, str]) -> list[MediaRecord]:
    """Every line in ``expected`` is one FAILED_INVALID_URL manifest row whose error matches; returns the other rows."""
    manifest = read_manifest(str(output))
    failed = {r.url: r for r in manifest if r.status == Status.FAILED_INVALID_URL}
    assert sorted(failed) == sorted(f"line {line} of {listing}" for line in expected)
    for line, reason in expected.items():
        record = failed[f"line {line} of {listing}"]
        assert re.search(reason, record.error), (line, record.error)
        assert (record.source, record.path, record.bytes) == (f"urls:{listing}", "", 0)
    stats = json.loads((output / "stats.json").read_text(encoding="utf-8"))
    assert stats["by_status"][Status.FAILED_INVALID_URL] == len(expected)
    assert stats["counters"]["url_list_bad_rows"] == len(expected)
    return [r for r in manifest if r.status != Status.FAILED_INVALID_URL]


def test_undecodable_and_oversized_csv_rows_become_failed_manifest_rows(tmp_path: Path) -> None:
    from beam_gbif.testing.media_server import MediaServer

    listing = tmp_path / "list.csv"
    with MediaServer() as media:
        base = media.base_url.encode()
        # The first undecodable byte comes after the first read chunk: the job itself must cope, not only the sniffing.
        listing.write_bytes(b"url,label,creator\n"
                            + b"%s/media/good1.jpg,a,Ann\n" % base
                            + b"%s/media/long.jpg,d,\"%s\"\n" % (base, b"x" * (MAX_CELL_CHARS + 1))  # line 3
                            + b"%s/media/huge.jpg,e,\"%s\"\n" % (base, b"y" * 200_000)  # line 4: over csv's own field limit
                            + b"%s/media/%s.jpg,f,Zed\n" % (base, b"z" * MAX_URL_CHARS)  # line 5
                            + b"%s/media/%s.jpg,g,Wim\n" % (base, b"w" * 2 * MAX_LINE_CHARS)  # line 6
                            + b"%s/media/caf\xe9.jpg,b,Bob\n" % base  # line 7: a Latin-1 byte in the URL
                            + b"%s/media/good2.jpg,c,Jos\xe9\n" % base  # line 8: ... in the creator
                            + b"%s/media/good3.jpg,h,Gil\n" % base)
        assert _run_list(listing, tmp_path / "out") == 0
        hits = set(media.hits)
    expected = {3: f"column 'creator' has more than {MAX_CELL_CHARS} characters: 'xxx.* \\(65537 characters\\)",
                4: "unreadable CSV \\(field larger than field limit",
                5: f"the URL has more than {MAX_URL_CHARS} characters",
                6: f"the line is longer than {MAX_LINE_CHARS} characters",
                7: r"column 'url' is not UTF-8: 'http://127\.0\.0\.1:\d+/media/caf\\\\xe9\.jpg'",
                8: r"column 'creator' is not UTF-8: 'Jos\\\\xe9'"}
    good = _check_unreadable_rows(tmp_path / "out", listing, expected)
    assert [(r.label, r.creator, r.status) for r in good] == [("a", "Ann", Status.DOWNLOADED), ("h", "Gil", Status.DOWNLOADED)]
    assert hits == {"/media/good1.jpg", "/media/good3.jpg"}  # nothing fetched for an unreadable row
    assert [row["creator"] for row in read_attribution(str(tmp_path / "out"))] == ["Ann", "Gil"]


def test_undecodable_and_oversized_lines_of_a_plain_list_become_failed_manifest_rows(tmp_path: Path) -> None:
    from beam_gbif.testing.media_server import MediaServer

    listing = tmp_path / "urls.txt"
    with MediaServer() as media:
        base = media.base_url.encode()
        listing.write_bytes(b"%s/media/ok.jpg\n\xff\xfe%s/media/bom.jpg\n%s/media/%s.jpg\r\n%s/media/%s.jpg\n%s/media/ok2.jpg"
                            % (base, base, base, b"q" * MAX_URL_CHARS, base, b"r" * (MAX_LINE_CHARS + 10), base))
        assert _run_list(listing, tmp_path / "out") == 0
        hits = set(media.hits)
    expected = {2: r"column 'url' is not UTF-8: '\\\\xff\\\\xfe", 3: "the URL has more than", 4: "the line is longer than"}
    good = _check_unreadable_rows(tmp_path / "out", listing, expected)
    assert [(r.url.rsplit("/", 1)[-1], r.status) for r in good] == [("ok.jpg", Status.DOWNLOADED), ("ok2.jpg", Status.DOWNLOADED)]
    assert hits == {"/media/ok.jpg", "/media/ok2.jpg"}
