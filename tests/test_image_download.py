"""Training-ready images end to end, against the local media server: the CLI, the manifest, stats, reruns, source sizes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from beam_gbif.core import source_sizes
from beam_gbif.core.records import MediaRecord, Status
from beam_gbif.core.source_sizes import SizeRule
from beam_gbif.io.images import ImageSettings
from beam_gbif.io.safety import AllowOnly
from beam_gbif.testing.collect import run_transform
from beam_gbif.testing.images import marker_corner
from beam_gbif.transforms.download import DownloadMedia, DownloadSettings
from beam_gbif.transforms.manifest import read_manifest
from pipelines.gbif_media import run

CASES = {
    # label: (media server path, expected status, stored size or None)
    "sideways": ("gen/sideways.jpg?w=400&h=300&orientation=6&gps=1", Status.DOWNLOADED, (64, 48)),
    "portrait": ("gen/portrait.png?w=300&h=400", Status.DOWNLOADED, (48, 64)),
    "cmyk": ("gen/cmyk.jpg?w=200&h=200&mode=CMYK", Status.DOWNLOADED, (64, 64)),
    "small": ("gen/small.jpg?w=50&h=40", Status.DOWNLOADED, (50, 40)),
    "cut": ("gen/cut.jpg?w=400&h=300&cut=0.6", Status.FAILED_DECODE, None),
    "bomb": ("bomb/bomb.png", Status.FAILED_DECODE, None),
    "tiny": ("gen/tiny.jpg?w=20&h=20", Status.FILTERED_TOO_SMALL, None),
    "panorama": ("gen/pano.jpg?w=900&h=200", Status.FILTERED_ASPECT_RATIO, None),
}
ARGS = ["--image_size", "64", "--min_image_size", "30", "--max_aspect_ratio", "3", "--allow_private_hosts", "true"]


def _job(media, tmp_path: Path, *extra: str) -> tuple[int, Path]:
    urls = tmp_path / "urls.csv"
    urls.write_text("url,label\n" + "".join(f"{media.fault_url(path)},{label}\n" for label, (path, _, _) in CASES.items()))
    out = tmp_path / "out"
    code = run(["--source", "urls", "--input", str(urls), "--output", str(out), "--max_retries", "0", *ARGS, *extra])
    return code, out


@pytest.fixture(scope="module")
def first_run(media, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("images")
    media.reset_hits()
    code, out = _job(media, tmp)
    assert code == 0
    return tmp, out, {r.label: r for r in read_manifest(str(out))}


@pytest.mark.parametrize("label", sorted(CASES))
def test_statuses_files_and_manifest_columns(first_run, label):
    _, out, rows = first_run
    row, (_, status, size) = rows[label], CASES[label]
    assert row.status == status, row.error
    assert row.fetched_url == row.url and row.original_bytes > 0
    if size is None:
        assert row.path == "" and row.error and not list(out.rglob(f"{row.basename}.*"))
        return
    image = Image.open(out / row.path)
    assert (image.size, (row.width, row.height)) == (size, size) and row.path.endswith(".jpg") and image.format == "JPEG"
    assert marker_corner(image) == "top-left" and not image.getexif()
    assert row.bytes == (out / row.path).stat().st_size and row.content_type == "image/jpeg"


def test_original_sizes_are_upright_and_stats_count_the_new_statuses(first_run):
    _, out, rows = first_run
    assert (rows["sideways"].original_width, rows["sideways"].original_height) == (400, 300)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["by_status"] == {"DOWNLOADED": 4, "FAILED_DECODE": 2, "FILTERED_TOO_SMALL": 1, "FILTERED_ASPECT_RATIO": 1}
    assert stats["filtered"] == 2 and stats["failed"] == 2
    assert stats["bytes_fetched"] == sum(r.original_bytes for r in rows.values())
    assert stats["bytes_stored"] == sum(r.bytes for r in rows.values()) < stats["bytes_fetched"]


def test_a_rerun_with_the_same_options_requests_nothing_already_stored(media, first_run):
    tmp, out, rows = first_run
    media.reset_hits()
    code, _ = _job(media, tmp)
    assert code == 0
    stored = {r.fetched_url.split("?")[0].split(str(media.port))[1] for r in rows.values() if r.status == Status.DOWNLOADED}
    assert stored and not stored & set(media.hits), "a stored image is never fetched again, whatever its new extension"
    again = {r.label: r for r in read_manifest(str(out)) if r.status != Status.KEPT_FROM_EARLIER_RUN}
    for label, row in rows.items():
        expected = Status.SKIPPED_EXISTING if row.status == Status.DOWNLOADED else row.status
        assert again[label].status == expected and again[label].path == row.path


BAD_OPTIONS = [(["--image_size", "0"], "--image_size"), (["--image_size", "-4"], "--image_size"),
               (["--resize_mode", "stretch"], "--resize_mode"), (["--encode_format", "gif"], "--encode_format"),
               (["--encode_quality", "101"], "--encode_quality"), (["--encode_quality", "0"], "--encode_quality"),
               (["--max_aspect_ratio", "0.5"], "--max_aspect_ratio")]


@pytest.mark.parametrize(("argv", "flag"), BAD_OPTIONS)
def test_bad_image_options_exit_2_with_one_line_before_any_request(media, tmp_path, capsys, argv, flag):
    urls = tmp_path / "urls.txt"
    urls.write_text(media.url("never") + "\n")
    media.reset_hits()
    code = run(["--source", "urls", "--input", str(urls), "--output", str(tmp_path / "out"), "--allow_private_hosts", "true", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"beam-gbif: error: {flag} "), err
    assert media.total_hits == 0 and not (tmp_path / "out").exists()


def record(url: str, key: int, label: str) -> MediaRecord:
    return MediaRecord(url=url, label=label, occurrence_key=key)


# -- smaller published versions ------------------------------------------------------------------------
@pytest.fixture
def local_versions(media, monkeypatch):
    """The iNaturalist rule's sizes for the media server's /photos/ route (the real rule names real hosts only)."""
    inaturalist = next(rule for rule in source_sizes.RULES if rule.name == "iNaturalist")
    rule = SizeRule("local", re.compile(rf"(?P<head>http://127\.0\.0\.1:{media.port}/photos/\d+-\d+/)original(?P<tail>\.jpg)"),
                    inaturalist.versions)
    monkeypatch.setattr(source_sizes, "RULES", (rule, *source_sizes.RULES))


@pytest.mark.usefixtures("local_versions")
def test_a_smaller_version_is_fetched_and_a_missing_one_falls_back_to_the_published_url(media, tmp_path):
    cases = {"present": "photos/0-1/original.jpg", "missing_404": "photos/404-2/original.jpg",
             "missing_403": "photos/403-3/original.jpg", "server_error": "photos/500-4/original.jpg"}
    records = [record(media.fault_url(path), key=i, label=label) for i, (label, path) in enumerate(cases.items())]
    settings = DownloadSettings(str(tmp_path / "out"), address_policy=AllowOnly(["127.0.0.1"]), max_retries=0,
                                images=ImageSettings(image_size=256))
    media.reset_hits()
    results, _ = run_transform(DownloadMedia(settings), tmp_path, records=records)
    rows = {r.label: r for r in results}
    medium = rows["present"]
    assert medium.status == Status.DOWNLOADED and medium.fetched_url.endswith("/photos/0-1/medium.jpg")
    assert (medium.original_width, medium.width, medium.error) == (500, 256, "")
    assert media.hits["/photos/0-1/original.jpg"] == 0
    for label in ("missing_404", "missing_403"):
        row = rows[label]
        assert row.status == Status.DOWNLOADED and row.fetched_url == row.url and row.original_width == 2000
        assert row.width == 256 and "medium.jpg: HTTP 40" in row.error and "fell back" in row.error
    failed = rows["server_error"]
    assert failed.status == Status.FAILED_HTTP and failed.fetched_url.endswith("/photos/500-4/medium.jpg")
    assert "HTTP 500" in failed.error and media.hits["/photos/500-4/original.jpg"] == 0
