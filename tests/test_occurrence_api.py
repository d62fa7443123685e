"""ReadOccurrenceMedia against the fake GBIF API, on the FnApiRunner."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_gbif.core.errors import OptionError
from beam_gbif.testing.fake_gbif import FakeGbifApi
from beam_gbif.testing.synthetic import SyntheticOccurrences
from beam_gbif.transforms.sources.media_items import DROPPED_MEDIA_OTHER_TYPE, DROPPED_NO_LABEL
from beam_gbif.transforms.sources.occurrence_api import (
    API_PAGES_READ,
    API_PLANNING_REQUESTS,
    API_RETRIES,
    API_STREAMS_SHORT,
    ApiReadSettings,
    ReadOccurrenceMedia,
)
from beam_gbif.transforms.stats import metric_counters
from pipelines import stages
from pipelines.options import GbifMediaOptions

ARTER_PAGE = "gbif-api/occurrence_search_taxonKey_3329049_offset_0.json"


# The FnApiRunner runs in this process: a module-level list is where the pipeline's output lands.
_COLLECTED: list = []


def _collect(records: list) -> None:
    _COLLECTED.extend(records)


def run_source(source: ReadOccurrenceMedia) -> tuple[list, dict[str, int]]:
    """Runs the source alone; returns its records and its counters (summed over steps)."""
    _COLLECTED.clear()
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    _ = pipeline | source | beam.combiners.ToList() | beam.Map(_collect)
    result = pipeline.run()
    result.wait_until_finish()
    return list(_COLLECTED), metric_counters(result)


def expected_urls(occurrences, media_type="StillImage") -> list[str]:
    return [m["identifier"] for o in occurrences for m in o.get("media", []) if m.get("type") == media_type and m.get("identifier")]


@pytest.fixture(scope="module")
def synthetic():
    return SyntheticOccurrences([1, 2, 3], ["a"], per_stream=1000, media_base_url="http://127.0.0.1:1", seed=4)


@pytest.fixture(scope="module")
def api(synthetic):
    with FakeGbifApi(synthetic) as server:
        yield server


def test_pages_through_every_page_and_keeps_only_the_media_type(fresh, synthetic):
    records, counters = run_source(ReadOccurrenceMedia(ApiReadSettings({"speciesKey": 1}, api_url=fresh.base_url,
        one_media_per_occurrence=False)))
    stream_one = [synthetic.occurrence(i) for i in range(1000)]
    assert sorted(r.url for r in records) == sorted(expected_urls(stream_one))
    assert {r.media_type for r in records} == {"StillImage"} and {r.source for r in records} == {"api"}
    assert counters[DROPPED_MEDIA_OTHER_TYPE] > 0  # Sound items on image occurrences were dropped
    assert counters[API_STREAMS_SHORT] == 0  # nothing was asked per stream: reading everything is never short
    pages = [r for r in fresh.search_requests() if r.query.get("limit") != "0"]
    count = sum(1 for o in stream_one if any(m["type"] == "StillImage" for m in o["media"]))
    assert sorted(int(r.query["offset"]) for r in pages) == list(range(0, count, 300))
    assert {r.query["limit"] for r in pages} <= {"300", str(count % 300)} and counters[API_PAGES_READ] == len(pages) >= 3


def test_repeated_query_values_are_or(fresh, synthetic):
    records, _ = run_source(ReadOccurrenceMedia(ApiReadSettings({"speciesKey": [1, 3]}, api_url=fresh.base_url, label_field="speciesKey",
        one_media_per_occurrence=False)))
    assert {r.label for r in records} == {"1", "3"}
    wanted = [synthetic.occurrence(i) for i in list(range(1000)) + list(range(2000, 3000))]
    assert sorted(r.url for r in records) == sorted(expected_urls(wanted))


def test_real_arter_page_media_filtering_and_missing_labels(shared_data):
    page = json.loads((shared_data / ARTER_PAGE).read_text())["results"]
    with FakeGbifApi(recorded_pages=[shared_data / ARTER_PAGE]) as api:
        records, counters = run_source(ReadOccurrenceMedia(ApiReadSettings({"taxonKey": 3329049}, api_url=api.base_url,
                label_field="habitat",
        one_media_per_occurrence=False)))
    with_label = [o for o in page if o.get("habitat")]
    assert sorted(r.url for r in records) == sorted(expected_urls(with_label))
    two_images = [o["key"] for o in with_label if len(expected_urls([o])) == 2]
    assert two_images and all(sum(r.occurrence_key == key for r in records) == 2 for key in two_images)
    without_label = [o for o in page if not o.get("habitat") and expected_urls([o])]
    assert without_label and counters[DROPPED_NO_LABEL] == len(without_label)
    assert "None" not in {r.label for r in records} and "" not in {r.label for r in records}
    assert {r.license_code for r in records} >= {"CC_BY_4_0"}


def test_429_then_500_then_success(fresh, synthetic):
    fresh.inject(status=429, retry_after=0)
    fresh.inject(status=500)
    records, counters = run_source(ReadOccurrenceMedia(ApiReadSettings({"speciesKey": 2}, api_url=fresh.base_url,
        one_media_per_occurrence=False)))
    assert sorted(r.url for r in records) == sorted(expected_urls(synthetic.occurrence(i) for i in range(1000, 2000)))
    # The first two requests (the planner's count) failed and were retried; every page was read once.
    assert counters[API_PLANNING_REQUESTS] == 1 + 2 and counters.get(API_RETRIES, 0) == 0
    assert len(fresh.search_requests()) == counters[API_PLANNING_REQUESTS] + counters[API_PAGES_READ]


def test_page_reads_retry_429_and_500(fresh, synthetic):
    fresh.inject(status=500, match_query={"offset": 300})
    fresh.inject(status=429, retry_after=0, times=2, match_query={"offset": 600})
    records, counters = run_source(ReadOccurrenceMedia(ApiReadSettings({"speciesKey": 2}, api_url=fresh.base_url,
        one_media_per_occurrence=False)))
    assert sorted(r.url for r in records) == sorted(expected_urls(synthetic.occurrence(i) for i in range(1000, 2000)))
    assert counters[API_RETRIES] == 3 and counters[API_PLANNING_REQUESTS] == 1
    assert len(fresh.search_requests()) == 1 + counters[API_PAGES_READ] + 3


def test_permanent_500_fails_with_url_and_status(fresh):
    fresh.inject("/v1/occurrence/search", status=500, times=100, body="upstream broken")
    with pytest.raises(Exception, match=r"HTTP 500 for http://127\.0\.0\.1:\d+/v1/occurrence/search\?speciesKey=3"):
        run_source(ReadOccurrenceMedia(ApiReadSettings({"speciesKey": 3}, api_url=fresh.base_url, max_retries=1)))
    fresh.clear_faults()


def test_unknown_query_field_is_a_clear_error():
    with pytest.raises(OptionError, match=r"'speciesKy'.*'speciesKey'"):
        ReadOccurrenceMedia(ApiReadSettings({"speciesKy": 1}, api_url="http://127.0.0.1:9/v1"))


def test_from_options():
    options = PipelineOptions([
        "--query", '{"speciesKey": [5352251, 3190653]}', "--label_field", "scientificName", "--split_streams_by", "datasetKey",
        "--nb_samples", "10", "--gbif_api_url", "http://127.0.0.1:9/v1", "--licenses", "CC0_1_0", "--seed", "3",
    ]).view_as(GbifMediaOptions)
    source = stages.read_occurrence_media(options)
    settings = source.settings
    assert settings.query == {"speciesKey": ["5352251", "3190653"], "mediaType": ["StillImage"]}
    assert (settings.label_field, settings.stream_fields, settings.nb_samples, settings.seed) == ("scientificName", ("datasetKey",), 10, 3)
    assert settings.api_url == "http://127.0.0.1:9/v1" and settings.licenses == {"CC0_1_0"}
    # One media per occurrence is the source's job (stages.sample_streams leaves it here), unless --all_media.
    assert source.settings.one_media_seed == 3
    all_media = stages.read_occurrence_media(PipelineOptions(["--all_media", "--seed", "3"]).view_as(GbifMediaOptions))
    assert all_media.settings.one_media_seed is None


@pytest.mark.slow
def test_two_worker_processes_read_the_same_records(fresh, synthetic, tmp_path):
    options = PipelineOptions(["--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    pipeline = beam.Pipeline(options=options)

    def source() -> ReadOccurrenceMedia:
        return ReadOccurrenceMedia(ApiReadSettings({"speciesKey": [1, 2]}, api_url=fresh.base_url, stream_fields=["speciesKey"],
                nb_samples=300, seed=5))

    _ = pipeline | source() | beam.Map(lambda r: r.url) | beam.io.WriteToText(str(tmp_path / "urls"))
    pipeline.run().wait_until_finish()
    urls = [line for path in tmp_path.glob("urls*") for line in path.read_text().splitlines()]
    in_process, _ = run_source(source())
    assert sorted(urls) == sorted(r.url for r in in_process) and len(urls) >= 300
