"""Pure image rules: stored sizes per resize mode, size filters, and the source-size URL table on real GBIF URLs."""

from __future__ import annotations

import json
import re

import pytest

from beam_gbif.core.errors import OptionError
from beam_gbif.core.image_geometry import check_image_options, size_filter, target_geometry
from beam_gbif.core.records import Status
from beam_gbif.core.source_sizes import RULES, source_candidates

LANDSCAPE, PORTRAIT, SQUARE = (1000, 500), (500, 1000), (800, 800)

# mode → expected stored size for (landscape, portrait, square) at --image_size 200
EXPECTED = {
    "no": [(1000, 500), (500, 1000), (800, 800)],
    "keep_ratio": [(400, 200), (200, 400), (200, 200)],
    "keep_ratio_largest": [(200, 100), (100, 200), (200, 200)],
    "center_crop": [(200, 200), (200, 200), (200, 200)],
    "border": [(200, 200), (200, 200), (200, 200)],
}


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_each_mode_gives_its_size_on_landscape_portrait_and_square(mode):
    got = [target_geometry(w, h, 200, mode).size for w, h in (LANDSCAPE, PORTRAIT, SQUARE)]
    assert got == EXPECTED[mode]


def test_border_pads_the_scaled_image_centred_and_center_crop_takes_the_middle():
    border = target_geometry(1000, 500, 200, "border")
    assert (border.scaled, border.canvas) == ((200, 100), (200, 200))
    crop = target_geometry(1000, 500, 200, "center_crop")
    assert (crop.scaled, crop.crop) == ((400, 200), (100, 0, 300, 200))


@pytest.mark.parametrize("mode", ["keep_ratio", "keep_ratio_largest", "center_crop", "border"])
def test_no_upscaling_by_default_and_upscaling_when_asked(mode):
    small = target_geometry(120, 90, 256, mode)
    assert small.scaled == (120, 90) and not small.resized
    assert max(small.size) <= 256 and (mode != "border" or small.size == (256, 256))
    assert target_geometry(120, 90, 256, mode, only_if_bigger=False).resized


def test_size_filters_refuse_tiny_and_panorama_images_and_are_off_at_zero():
    assert size_filter(100, 40, 50, 0)[0] == Status.FILTERED_TOO_SMALL
    assert size_filter(4000, 1000, 0, 3)[0] == Status.FILTERED_ASPECT_RATIO
    assert size_filter(1000, 4000, 0, 3)[0] == Status.FILTERED_ASPECT_RATIO
    assert size_filter(100, 40, 0, 0) is None and size_filter(3000, 1000, 40, 3) is None


@pytest.mark.parametrize(("args", "flag"), [((0, "keep_ratio", "jpg", 95, 0, 0, 1), "--image_size"),
                                            ((-5, "keep_ratio", "jpg", 95, 0, 0, 1), "--image_size"),
                                            ((256, "stretch", "jpg", 95, 0, 0, 1), "--resize_mode"),
                                            ((256, "border", "gif", 95, 0, 0, 1), "--encode_format"),
                                            ((256, "border", "jpg", 0, 0, 0, 1), "--encode_quality"),
                                            ((256, "border", "jpg", 101, 0, 0, 1), "--encode_quality"),
                                            ((256, "border", "jpg", 95, 0, 0.5, 1), "--max_aspect_ratio")])
def test_bad_image_options_name_the_flag(args, flag):
    with pytest.raises(OptionError, match=f"^{flag} "):
        check_image_options(*args)


def _real_identifiers(shared_data, needle: str) -> list[str]:
    found = set()
    for path in sorted((shared_data / "gbif-api").glob("*.json")):
        found.update(re.findall(r'"identifier"\s*:\s*"([^"]+)"', path.read_text(encoding="utf-8")))
    return sorted(url for url in found if needle in url)


def test_inaturalist_open_data_urls_of_real_gbif_records(shared_data):
    urls = _real_identifiers(shared_data, "inaturalist-open-data.s3.amazonaws.com/photos/")
    assert len(urls) > 20 and any(u.endswith(".jpeg") for u in urls) and any(u.endswith(".jpg") for u in urls)
    for url in urls:
        assert source_candidates(url, "auto", 200, "keep_ratio_largest") == [url.replace("/original.", "/small."), url], url
        assert source_candidates(url, "auto", 256, "keep_ratio_largest") == [url.replace("/original.", "/medium."), url]
        # keep_ratio needs the smaller side: 400 px of a 4:3 photo needs a 533 px longer side
        assert source_candidates(url, "auto", 400, "keep_ratio") == [url.replace("/original.", "/large."), url]
        assert source_candidates(url, "auto", 800) == [url.replace("/original.", "/large."), url]
        assert source_candidates(url, "auto", 2000) == [url]  # nothing published is large enough
        assert source_candidates(url, "auto", None) == [url] and source_candidates(url, "original", 256) == [url]
        assert source_candidates(url, "medium") == [url.replace("/original.", "/medium."), url]


def test_inaturalist_static_host_and_other_pages_of_it():
    url = "https://static.inaturalist.org/photos/107786571/original.jpg"
    assert source_candidates(url, "large") == ["https://static.inaturalist.org/photos/107786571/large.jpg", url]
    for page in ("https://www.inaturalist.org/photos/107786571", "https://www.inaturalist.org/observations/81093458"):
        assert source_candidates(page, "small") == [page]  # a web page, not a photo URL: left alone


def test_plantnet_urls():
    # No Pl@ntNet media in ../shared/data: the URL form of Pl@ntNet's GBIF dataset (images of bs.plantnet.org).
    url = "https://bs.plantnet.org/image/o/35c1c1e9c6d3b7d3f0e6b1b1b8f1d5c6a7e3f2d1"
    assert source_candidates(url, "medium") == [url.replace("/image/o/", "/image/m/"), url]
    assert source_candidates(url, "small") == [url.replace("/image/o/", "/image/s/"), url]
    assert source_candidates(url, "large") == [url]  # Pl@ntNet publishes no large version
    assert source_candidates(url, "auto", 256) == [url.replace("/image/o/", "/image/s/"), url]
    assert source_candidates(url, "auto", 256, "no") == [url]  # mode no keeps the original's size


def test_every_rule_names_its_versions_largest_first_and_the_original_url_is_always_last():
    for rule in RULES:
        sides = [pixels for _, _, pixels in rule.versions]
        assert sides == sorted(sides, reverse=True), rule.name
    for url in ("https://example.org/a.jpg", "http://127.0.0.1:1/photos/1/original.jpg"):
        assert source_candidates(url, "small", 64) == [url]


def test_source_size_table_is_valid_json_friendly():
    # The manifest stores fetched_url as text: every candidate is a plain str.
    assert all(isinstance(u, str) for u in source_candidates("https://static.inaturalist.org/photos/1/original.png", "small"))
    json.dumps(source_candidates("https://static.inaturalist.org/photos/1/original.png", "small"))
