"""ReadDwcaMedia end to end: the real GBIF archive and synthetic ones, compared with a plain-Python count."""

from __future__ import annotations

import zipfile
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_gbif.core.licenses import normalize_license
from beam_gbif.core.records import MediaRecord
from beam_gbif.io.dwca.archive import forget_prepared_archives
from beam_gbif.io.dwca.meta import DwcaError
from beam_gbif.testing.collect import run_transform
from beam_gbif.testing.fake_downloads import FakeDownload, download_routes
from beam_gbif.testing.fake_gbif import FakeGbifApi
from beam_gbif.testing.synthetic_dwca import write_synthetic_dwca
from beam_gbif.transforms.sources.dwca import (
    MALFORMED_MULTIMEDIA_ROWS,
    MALFORMED_OCCURRENCE_ROWS,
    DwcaReadSettings,
    ReadDwcaMedia,
    archive_citation,
    plan_archive,
)
from beam_gbif.transforms.sources.media_items import DROPPED_MEDIA_OTHER_TYPE, DROPPED_NO_LABEL, DROPPED_NO_MEDIA
from pipelines import stages
from pipelines.gbif_media import run
from pipelines.options import GbifMediaOptions, normalize_argv
from tests.conftest import REAL_DWCA_DOI as DOI
from tests.conftest import REAL_DWCA_KEY as KEY

VERBATIM_LOCALITY = "http://rs.tdwg.org/dwc/terms/verbatimLocality"


pytestmark = pytest.mark.usefixtures("fresh_dwca_memo")


def run_source(transform: beam.PTransform, out: Path, runner_args: tuple[str, ...] = ()) -> tuple[list[MediaRecord], Counter]:
    """Runs ``transform`` alone; returns its records and the beam_gbif counters."""
    records, counters = run_transform(transform, out, runner_args=runner_args)
    return records, Counter(counters)


def _rows(archive: zipfile.ZipFile, member: str) -> list[dict[str, str]]:
    """Plain Python: a GBIF text file's rows by header name (well-formed rows only)."""
    lines = archive.read(member).decode("utf-8").split("\n")
    header = lines[0].split("\t")
    rows = [line.split("\t") for line in lines[1:] if line]
    return [dict(zip(header, row, strict=True)) for row in rows if len(row) == len(header)]


def expected_images(path: Path, label: str) -> tuple[set[tuple], int]:
    """(occurrence key, url, label, licence, rightsHolder) of every StillImage row with a URL and a labelled occurrence."""
    with zipfile.ZipFile(path) as archive:
        occurrences = {row["gbifID"]: row for row in _rows(archive, "occurrence.txt")}
        media = _rows(archive, "multimedia.txt")
    short = label.rsplit("/", 1)[-1]
    expected, unlabelled = set(), 0
    for item in media:
        if item["type"] != "StillImage" or not item["identifier"].strip():
            continue
        value = occurrences[item["gbifID"]][short].strip()
        if not value:
            unlabelled += 1
            continue
        expected.add((int(item["gbifID"]), item["identifier"].strip(), value, item["license"].strip(), item["rightsHolder"].strip()))
    return expected, unlabelled


def _as_tuples(records: list[MediaRecord]) -> set[tuple]:
    return {(r.occurrence_key, r.url, r.label, r.license, r.rights_holder) for r in records}


def test_real_archive_every_still_image_becomes_a_record(real_zip, tmp_path):
    expected, _ = expected_images(real_zip, "speciesKey")
    records, counters = run_source(ReadDwcaMedia(DwcaReadSettings(str(real_zip), cache_root=str(tmp_path / "cache"),
            label_field="speciesKey")), tmp_path)
    assert len(records) == len(expected) == 475  # of 615 StillImage rows with a URL, 140 are of occurrences without a speciesKey
    assert counters[DROPPED_NO_LABEL] > 0
    assert _as_tuples(records) == expected
    assert all(r.license_code == normalize_license(r.license) for r in records)
    assert {r.source for r in records} == {f"dwca:{DOI}"}
    assert all(r.media_type == "StillImage" and r.dataset_key for r in records)
    assert counters[DROPPED_MEDIA_OTHER_TYPE] == 4  # the four IIIF manifests without a type
    assert counters[MALFORMED_OCCURRENCE_ROWS] == counters[MALFORMED_MULTIMEDIA_ROWS] == 0


def test_real_archive_by_doi_labels_from_a_full_term_uri_keep_literal_quotes(real_zip, tmp_path):
    expected, unlabelled = expected_images(real_zip, VERBATIM_LOCALITY)
    assert any('"' in label for _, _, label, _, _ in expected)  # the point of this label: values with a literal "
    with FakeGbifApi(extra_routes=[download_routes([FakeDownload(key=KEY, doi=DOI, archive=real_zip)])]) as gbif:
        source = ReadDwcaMedia(DwcaReadSettings(DOI, cache_root=str(tmp_path / "cache"), api_url=gbif.base_url,
                label_field=VERBATIM_LOCALITY,
                               stream_fields=["datasetKey", "http://rs.tdwg.org/dwc/terms/countryCode"]))
        records, counters = run_source(source, tmp_path)
    assert _as_tuples(records) == expected
    assert counters[DROPPED_NO_LABEL] > 0 and unlabelled > 0
    with zipfile.ZipFile(real_zip) as archive:
        country = {row["gbifID"]: (row["datasetKey"], row["countryCode"]) for row in _rows(archive, "occurrence.txt")}
    assert all(r.stream == country[str(r.occurrence_key)] for r in records)


def test_synthetic_archive_with_shuffled_columns_and_malformed_rows(tmp_path):
    summary = write_synthetic_dwca(tmp_path / "synthetic.zip", occurrences=3000, media=4500, seed=7, shuffle_columns=True, malformed_rows=3)
    expected, unlabelled = expected_images(summary.path, "family")
    records, counters = run_source(ReadDwcaMedia(DwcaReadSettings(str(summary.path), cache_root=str(tmp_path / "cache"),
            label_field="family")), tmp_path)
    assert unlabelled == 0 and len(expected) == summary.still_images_with_url
    assert _as_tuples(records) == expected
    assert counters[MALFORMED_OCCURRENCE_ROWS] == 3 and counters[MALFORMED_MULTIMEDIA_ROWS] == 3
    assert counters[DROPPED_NO_MEDIA] == 3000 - summary.occurrences_with_media  # occurrences without images: absent, no crash
    assert all('"' in r.rights_holder for r in records)


def test_unknown_label_term_is_a_clear_error_before_any_row_is_read(real_zip, tmp_path):
    settings = DwcaReadSettings(str(real_zip), cache_root=str(tmp_path), label_field="specieskey_typo")
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    _ = pipeline | ReadDwcaMedia(settings)  # building the graph reads nothing
    assert not list(tmp_path.iterdir())
    with pytest.raises(DwcaError, match="occurrence.txt has no column 'specieskey_typo'"):
        plan_archive(settings)  # the pipeline's first step
    with pytest.raises(Exception, match="occurrence.txt has no column 'specieskey_typo'"):
        pipeline.run().wait_until_finish()


def test_the_cli_names_a_missing_archive_column_in_one_line(real_zip, tmp_path, capsys):
    code = run([f"--dwca={real_zip}", f"--dwca_root_path={tmp_path / 'cache'}", "--label=specieskey_typo", f"--output={tmp_path / 'out'}",
                "--runner=FnApiRunner"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "occurrence.txt has no column 'specieskey_typo'" in err[0], err


def test_from_options_and_archive_citation(real_zip, tmp_path):
    argv = [f"--dwca={real_zip}", f"--dwca_root_path={tmp_path / 'cache'}", "--label=scientificName", "--split_streams_by=datasetKey",
            "--media_type=StillImage", "--all_media"]
    options = PipelineOptions(normalize_argv(argv)).view_as(GbifMediaOptions)
    records, _ = run_source(stages.read_dwca_media(options), tmp_path)
    assert len(records) == len(expected_images(real_zip, "scientificName")[0])
    assert all(r.stream == (r.dataset_key,) for r in records)
    citation = archive_citation(stages.dwca_settings(options))
    assert citation["doi"] == DOI and citation["source"] == f"dwca:{DOI}"
    assert citation["citation"].endswith("GBIF Occurrence Download https://doi.org/10.15468/dl.jd3hup")


@pytest.mark.slow
def test_same_records_with_two_worker_processes(tmp_path):
    summary = write_synthetic_dwca(tmp_path / "synthetic.zip", occurrences=2000, media=3000, seed=3)

    def source(scratch_dir: Path | None = None) -> ReadDwcaMedia:
        return ReadDwcaMedia(DwcaReadSettings(str(summary.path), cache_root=str(tmp_path / "cache"), label_field="speciesKey",
                stream_fields=["datasetKey"],
                             scratch_dir=None if scratch_dir is None else str(scratch_dir)))

    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    in_memory, _ = run_source(source(), tmp_path / "one")
    forget_prepared_archives()
    # The two workers join through the on-disk shuffle that local runs use (the first run, through Beam's GroupByKey).
    multi, counters = run_source(source(tmp_path / "spill"), tmp_path / "two",
                                 ("--direct_num_workers=2", "--direct_running_mode=multi_processing"))
    assert list((tmp_path / "spill").iterdir()) == []
    assert len(in_memory) == summary.still_images_with_url
    assert sorted(multi, key=lambda r: r.url) == sorted(in_memory, key=lambda r: r.url)
    assert counters[DROPPED_NO_MEDIA] == 2000 - summary.occurrences_with_media


@pytest.mark.parametrize("runner", ["DataflowRunner", "dataflow"])
def test_dataflow_needs_a_gcs_cache(real_zip, runner):
    options = PipelineOptions(normalize_argv([f"--dwca={real_zip}", f"--runner={runner}", "--dwca_root_path=/tmp/x"]))
    with pytest.raises(DwcaError, match=f"--dwca_root_path must be a gs:// folder on {runner}"):
        stages.read_dwca_media(options.view_as(GbifMediaOptions))
