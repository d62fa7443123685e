"""Read planning against the fake GBIF API: few requests for small samples, every record reachable."""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_gbif.core.query import validate_query
from beam_gbif.io.gbif.client import GbifClient
from beam_gbif.io.gbif.planner import group_values, plan_reads
from beam_gbif.io.gbif.planning import OFFSET_CAP, PAGE_SIZE, PageStat
from beam_gbif.testing.fake_gbif import FakeGbifApi
from beam_gbif.testing.synthetic import SyntheticOccurrences
from beam_gbif.transforms.filtering import FilterMedia
from beam_gbif.transforms.sampling import SampleStreams, SamplingSettings
from beam_gbif.transforms.sources.occurrence_api import API_STREAMS_SHORT, ApiReadSettings, ReadOccurrenceMedia
from beam_gbif.transforms.stats import metric_counters

SPECIES = list(range(101, 111))

_COLLECTED: list = []


def _collect(items: list) -> None:
    _COLLECTED.extend(items)


def run(transform_chain) -> tuple[list, dict[str, int]]:
    _COLLECTED.clear()
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    _ = transform_chain(pipeline) | beam.combiners.ToList() | beam.Map(_collect)
    result = pipeline.run()
    result.wait_until_finish()
    return list(_COLLECTED), metric_counters(result)


@pytest.fixture(scope="module")
def large_streams():
    """10 streams × 50,000 occurrences (about 42,000 with an image each)."""
    occurrences = SyntheticOccurrences(SPECIES, ["d1"], per_stream=50_000, media_base_url="http://127.0.0.1:1", seed=7)
    with FakeGbifApi(occurrences) as api:
        yield api


def test_small_balanced_sample_of_large_streams_reads_near_the_minimum(large_streams):
    api = large_streams
    api.clear_requests()
    source = ReadOccurrenceMedia(ApiReadSettings({"speciesKey": SPECIES}, api_url=api.base_url, stream_fields=["speciesKey"],
            nb_samples=1000, seed=1))
    selected, counters = run(lambda p: p | source | FilterMedia() | SampleStreams(SamplingSettings(nb_samples=1000, seed=1)))
    per_stream = collections.Counter(r.stream for r in selected)
    assert per_stream == {(str(s),): 100 for s in SPECIES}  # exact, from what was read
    pages = [r for r in api.search_requests() if r.query.get("limit") != "0"]
    planning = len(api.search_requests()) - len(pages)
    minimum = 10  # one page per stream: each stream needs its own filtered request
    assert planning == 1 and minimum <= len(pages) <= 2 * minimum, (planning, len(pages))
    total_pages = sum(-(-count // PAGE_SIZE) for count in [42_000] * 10)
    assert len(pages) < total_pages / 50  # never every page
    offsets = {int(r.query["offset"]) for r in pages}
    assert len(offsets) > 3 and counters[API_STREAMS_SHORT] == 0  # seeded random pages, not all the first one


def test_page_choice_is_seeded(large_streams):
    client = GbifClient(large_streams.base_url)
    query = validate_query({"speciesKey": SPECIES[:3]}, media_type="StillImage")

    def pages(seed: int) -> list:
        plan = plan_reads(client, query, stream_fields=["speciesKey"], nb_samples_per_stream=500, seed=seed)
        return [(p.stream, p.offset) for p in plan.page_requests()]

    assert pages(1) == pages(1) and pages(1) != pages(2)
    assert len(pages(1)) == 3 * 3  # ceil(500 × 1.25 + 20) / 300 pages per stream


def test_streams_outside_the_query_are_discovered_by_facets(large_streams):
    client = GbifClient(large_streams.base_url)
    large_streams.clear_requests()
    plan = plan_reads(client, validate_query({"speciesKey": SPECIES[:4]}, media_type="StillImage"),
                      stream_fields=["datasetKey", "speciesKey"], nb_samples=40)
    assert [s.stream for s in plan.streams] == [("d1", str(s)) for s in SPECIES[:4]]
    assert [s.quota for s in plan.streams] == [10] * 4
    # One facet call discovers the datasets, one per dataset counts the species.
    assert plan.planning_requests == len(large_streams.search_requests()) == 2
    text = plan.describe()
    assert "streams by datasetKey,speciesKey: 4" in text and "d1/101" in text and "minimum possible 4" in text


def test_top_up_reads_further_unread_pages_for_short_streams(large_streams):
    client = GbifClient(large_streams.base_url)
    plan = plan_reads(client, validate_query({"speciesKey": SPECIES[:2]}, media_type="StillImage"),
                      stream_fields=["speciesKey"], nb_samples=600)
    first = plan.page_requests()
    assert len(first) == 2 * 2
    # The first round found few usable records in stream 101 (e.g. a strict licence filter) and plenty in 102.
    stats = [PageStat(p.page_id, p.limit, 10 if p.stream == ("101",) else p.limit) for p in first]
    more = plan.top_up(stats)
    assert more and {p.stream for p in more} == {("101",)}
    assert not {p.page_id for p in more} & {p.page_id for p in first}
    stats += [PageStat(p.page_id, p.limit, p.limit) for p in more]
    assert plan.top_up(stats) == [] and plan.shortfalls(stats) == {}


def test_short_stream_is_reported():
    occurrences = SyntheticOccurrences([1, 2], ["d"], stream_sizes={(1, "d"): 400, (2, "d"): 12}, media_count_weights=(0, 1, 0, 0, 0),
                                       sound_fraction=0, missing_identifier_fraction=0.5, duplicate_url_fraction=0, seed=2)
    with FakeGbifApi(occurrences) as api:
        source = ReadOccurrenceMedia(ApiReadSettings({"speciesKey": [1, 2]}, api_url=api.base_url, stream_fields=["speciesKey"],
                nb_samples_per_stream=50))
        records, counters = run(lambda p: p | source)
    assert counters[API_STREAMS_SHORT] == 1
    assert collections.Counter(r.stream for r in records)[("1",)] >= 50


@pytest.mark.slow
def test_stream_of_250000_is_fully_reachable_through_partitioning():
    # Two years of 125,000 each: years alone do not get under the cap, so each is split again (by month).
    occurrences = SyntheticOccurrences([42], ["big"], per_stream=250_000, media_count_weights=(0, 1, 0, 0, 0), sound_fraction=0,
                                       years=(2000, 2001), seed=3)
    with FakeGbifApi(occurrences) as api:
        client = GbifClient(api.base_url, max_concurrency=4)
        plan = plan_reads(client, validate_query({"speciesKey": 42}, media_type="StillImage"), stream_fields=["speciesKey"])
        (stream,) = plan.streams
        assert stream.count == 250_000 and len(stream.segments) > 3
        assert all(segment.count <= OFFSET_CAP for segment in stream.segments)
        assert any("partitioned by year" in note for note in plan.notes) and any("month" in note for note in plan.notes)
        pages = plan.page_requests()

        def keys(page) -> list[int]:
            return [o["key"] for o in client.search(page.search_params())["results"]]

        with ThreadPoolExecutor(4) as pool:
            read = [key for page_keys in pool.map(keys, pages) for key in page_keys]
    assert len(read) == len(set(read)) == 250_000


def _weighted_plan(nb_samples: int):
    """A weighted plan over three streams of 3,000, 9,000 and 30,000 occurrences."""
    sizes = {(1, "d"): 3_000, (2, "d"): 9_000, (3, "d"): 30_000}
    occurrences = SyntheticOccurrences([1, 2, 3], ["d"], stream_sizes=sizes, media_count_weights=(0, 1, 0, 0, 0), sound_fraction=0, seed=6)
    with FakeGbifApi(occurrences) as api:
        return plan_reads(GbifClient(api.base_url), validate_query({"speciesKey": [1, 2, 3]}, media_type="StillImage"),
                          stream_fields=["speciesKey"], nb_samples=nb_samples, weighted=True)


def test_weighted_sampling_reads_each_stream_for_its_quota_not_in_proportion_to_its_size():
    plan = _weighted_plan(420)
    assert [s.quota for s in plan.streams] == [30, 90, 300]
    # The sampler weighs streams by these counts, so reads need only cover each quota (+ margin), as when balanced.
    assert plan.stream_sizes() == {("1",): 3_000, ("2",): 9_000, ("3",): 30_000}
    assert [s.target_reads for s in plan.streams] == [58, 133, 395]  # ceil(quota × 1.25) + 20
    reads = collections.Counter()
    for page in plan.page_requests():
        reads[page.stream] += page.limit
    assert reads == {("1",): 300, ("2",): 300, ("3",): 600}  # whole pages


def test_weighted_top_up_aims_at_the_quota_by_size_of_a_stream_with_few_usable_records():
    plan = _weighted_plan(4_200)
    assert [s.quota for s in plan.streams] == [300, 900, 3_000]
    first = plan.page_requests()
    # Stream 1 turns out to have 40% usable occurrences: 240 of the 600 read, short of its quota of 300
    # (weighed by its estimated usable records, 1,200, its target would have been 125: no top-up).
    stats = [PageStat(p.page_id, p.limit, p.limit * 2 // 5 if p.stream == ("1",) else p.limit) for p in first]
    more = plan.top_up(stats)
    assert {p.stream for p in more} == {("1",)}
    stats += [PageStat(p.page_id, p.limit, p.limit * 2 // 5) for p in more]
    assert plan.top_up(stats) == [] and plan.shortfalls(stats) == {}


def test_empty_stream_combinations_are_left_out_of_the_quotas(large_streams):
    plan = plan_reads(GbifClient(large_streams.base_url), validate_query({"speciesKey": [101, 999]}, media_type="StillImage"),
                      stream_fields=["speciesKey"], nb_samples=-1)
    # Species 999 has no occurrence: the sampler never sees it, so -1 must not balance to zero.
    assert [(s.stream, s.quota) for s in plan.streams] == [(("101",), plan.streams[0].count)] and plan.streams[0].count > 40_000


@pytest.mark.parametrize("field", ["occurrenceRemarks", "eventDate"])  # not a search parameter / not facetable
def test_streams_that_cannot_be_counted_fall_back_to_reading_everything(large_streams, field):
    plan = plan_reads(GbifClient(large_streams.base_url), validate_query({"speciesKey": 101}, media_type="StillImage"),
                      stream_fields=[field], nb_samples=10)
    (stream,) = plan.streams
    assert stream.stream == () and stream.reads_everything and field in plan.notes[0]
    assert plan.stream_sizes() == {}  # nothing to weigh streams by: the sampler weighs what it reads (everything)
    assert len(plan.page_requests()) == stream.total_pages() > 100


def test_partition_groups_stay_under_the_offset_cap():

    years = {"1999": 60_000, "2000": 30_000, "2001": 150_000, "2002": 5_000}
    assert group_values("year", years, constrained=False) == [(["1999,2000"], 90_000), (["2001"], 150_000), (["2002"], 5_000)]
    # A query that already restricts the field keeps explicit values (a range could widen it).
    assert group_values("year", {"1999": 1, "2003": 2}, constrained=True) == [(["1999", "2003"], 3)]
    datasets = {"a": 70_000, "b": 40_000, "c": 20_000}
    assert group_values("datasetKey", datasets, constrained=False) == [(["a"], 70_000), (["b", "c"], 60_000)]
