"""SampleStreams on the FnApiRunner: exact per-stream quotas, seeded and reproducible selection."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_gbif import METRICS_NAMESPACE
from beam_gbif.core.errors import OptionError
from beam_gbif.core.hashing import seeded_hash
from beam_gbif.core.quotas import compute_quotas
from beam_gbif.core.records import MediaRecord
from beam_gbif.transforms.sampling import BOUNDED, CAP_ONLY, EVERYTHING, SHORT_STREAMS, TWO_PASS, SampleStreams, SamplingSettings
from beam_gbif.transforms.sampling.bounded import BoundedBalancedSampleFn
from beam_gbif.transforms.sampling.combiners import ONE_MEDIA_PURPOSE, STREAM_SAMPLE_PURPOSE, one_media_of_occurrence
from pipelines import stages
from pipelines.options import GbifMediaOptions

RUNNER = "--runner=FnApiRunner"
# Uneven streams (two stream fields), some occurrences with several media.
STREAM_SIZES = {("d1", "s1"): 60, ("d1", "s2"): 7, ("d2", "s1"): 35, ("d2", "s3"): 120, ("d3", "s9"): 1}


def make_records(stream_sizes: dict[tuple[str, ...], int], media_every: int = 4) -> list[MediaRecord]:
    """``size`` occurrences per stream; every ``media_every``-th occurrence has three media."""
    records, occurrence = [], 1000
    for stream, size in stream_sizes.items():
        for _ in range(size):
            occurrence += 1
            for media in range(3 if occurrence % media_every == 0 else 1):
                url = f"https://img.example.org/{'/'.join(stream)}/{occurrence}/{media}.jpg"
                records.append(MediaRecord(url=url, label=stream[-1], occurrence_key=occurrence, stream=stream, dataset_key=stream[0]))
    return records


def expected_selection(records, *, nb_samples=None, nb_samples_per_stream=None, weighted=False, one_media_per_occurrence=True, seed=0,
                       weights=None):
    """The sampling rules (README "Sampling") computed directly: the oracle the pipeline must match exactly."""
    if one_media_per_occurrence:
        best = {}
        for record in records:
            key = (seeded_hash(seed, record.url, purpose=ONE_MEDIA_PURPOSE), record.url)
            if record.occurrence_key not in best or key < best[record.occurrence_key][0]:
                best[record.occurrence_key] = (key, record)
        records = [record for _, record in best.values()]
    by_stream = defaultdict(list)
    for record in records:
        by_stream[record.stream].append(record)
    availability = {stream: len(members) for stream, members in by_stream.items()}
    quotas = compute_quotas(availability, nb_samples=nb_samples, nb_samples_per_stream=nb_samples_per_stream, weighted=weighted, seed=seed,
                            weights=weights)
    selected = set()
    for stream, members in by_stream.items():
        members.sort(key=lambda r: (seeded_hash(seed, r.url, purpose=STREAM_SAMPLE_PURPOSE), r.url))
        selected.update(r.url for r in members[: quotas[stream]])
    return selected, quotas


class Run:
    """One pipeline run's selected URLs, per-stream stats rows and counters."""

    def __init__(self, records, tmp_path: Path, extra_args=(), one_media_per_occurrence=True, stream_sizes=None, **sampler_args):
        # The records hold several media per occurrence, so the sampler's own one-media step is on unless a case turns it off
        # (the pipeline leaves that step to the GBIF sources: see test_from_options).
        out = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
        pipeline = beam.Pipeline(options=PipelineOptions([RUNNER, *extra_args]))
        # As a source that reads part of each stream hands them over (ReadOccurrenceMedia.stream_sizes).
        sizes = None if stream_sizes is None else pipeline | "StreamSizes" >> beam.Create([stream_sizes])
        sampler = SampleStreams(SamplingSettings(one_media_per_occurrence=one_media_per_occurrence, **sampler_args), stream_sizes=sizes)
        self.strategy = sampler.strategy
        selected = pipeline | "Records" >> beam.Create(records) | "Sample" >> sampler
        lines = selected | "UrlLines" >> beam.Map(lambda r: json.dumps([r.url, list(r.stream), r.occurrence_key]))
        _ = lines | "WriteUrls" >> beam.io.WriteToText(str(out / "selected"))
        _ = sampler.stream_stats | "StatLines" >> beam.Map(json.dumps) | "WriteStats" >> beam.io.WriteToText(str(out / "stats"))
        result = pipeline.run()
        result.wait_until_finish()
        rows = [json.loads(line) for path in out.glob("selected*") for line in path.read_text().splitlines()]
        self.urls = [row[0] for row in rows]
        self.per_stream = Counter(tuple(row[1]) for row in rows)
        self.occurrences = Counter(row[2] for row in rows)
        self.stats = {tuple(row["stream"]): row for path in out.glob("stats*") for row in map(json.loads, path.read_text().splitlines())}
        self.counters = {
            c.key.metric.name: c.committed for c in result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
        }


RECORDS = make_records(STREAM_SIZES)

MODES = {
    "balanced": ({"nb_samples": 100}, BOUNDED),
    "balanced-two-pass": ({"nb_samples": 100, "strategy": TWO_PASS}, TWO_PASS),
    "balanced-capped": ({"nb_samples": 100, "nb_samples_per_stream": 25}, BOUNDED),
    "largest-balanced": ({"nb_samples": -1}, TWO_PASS),
    "cap-only": ({"nb_samples_per_stream": 30}, CAP_ONLY),
    "weighted": ({"nb_samples": 90, "weighted": True}, TWO_PASS),
    "weighted-capped": ({"nb_samples": 90, "weighted": True, "nb_samples_per_stream": 40}, TWO_PASS),
    "everything-all-media": ({"one_media_per_occurrence": False}, EVERYTHING),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_each_mode_selects_exactly_the_seeded_lowest_ranks_of_each_quota(mode, tmp_path):
    args, strategy = MODES[mode]
    run = Run(RECORDS, tmp_path, seed=7, **args)
    expected, quotas = expected_selection(RECORDS, seed=7, **{k: v for k, v in args.items() if k != "strategy"})
    assert run.strategy == strategy
    assert sorted(run.urls) == sorted(expected)  # the exact set: nothing beyond a quota, nothing missing
    assert dict(run.per_stream) == {stream: quota for stream, quota in quotas.items() if quota}
    assert {stream: row["selected"] for stream, row in run.stats.items()} == quotas
    assert {stream: row["quota"] for stream, row in run.stats.items()} == quotas
    if args.get("one_media_per_occurrence", True):
        assert max(run.occurrences.values()) == 1
        assert {stream: row["available"] for stream, row in run.stats.items()} == STREAM_SIZES  # occurrences, not media


def test_balanced_mode_gives_short_streams_everything_and_the_rest_an_equal_share(tmp_path):
    run = Run(RECORDS, tmp_path, nb_samples=100, seed=1)
    assert sum(run.per_stream.values()) == 100
    assert run.per_stream[("d3", "s9")] == 1 and run.per_stream[("d1", "s2")] == 7  # short: all they have
    # 223 occurrences; 1 + 7 taken whole, 92 left for three streams: level 30, two leftover units.
    assert sorted(run.per_stream[s] for s in [("d1", "s1"), ("d2", "s1"), ("d2", "s3")]) == [30, 31, 31]


def test_same_seed_same_records_other_seed_other_records(tmp_path):
    first = Run(RECORDS, tmp_path, nb_samples=60, seed=11)
    again = Run(list(reversed(RECORDS)), tmp_path, nb_samples=60, seed=11)
    other = Run(RECORDS, tmp_path, nb_samples=60, seed=12)
    assert sorted(first.urls) == sorted(again.urls)
    assert set(first.urls) != set(other.urls)
    assert len(first.urls) == len(other.urls) == 60


def test_a_short_stream_gives_all_it_has_and_is_reported(tmp_path, caplog):
    run = Run(RECORDS, tmp_path, nb_samples_per_stream=50, seed=0)
    short = {stream for stream, row in run.stats.items() if row["short"]}
    assert short == {("d1", "s2"), ("d2", "s1"), ("d3", "s9")}
    assert run.per_stream[("d2", "s1")] == 35 and run.per_stream[("d1", "s1")] == 50
    assert run.stats[("d1", "s2")] == {"stream": ["d1", "s2"], "available": 7, "quota": 7, "requested": 50, "selected": 7, "short": True}
    assert run.counters[SHORT_STREAMS] == 3
    assert "is short: 7 records available, 50 asked for" in caplog.text


def test_selection_within_a_large_stream_is_uniform(tmp_path):
    # 10,000 occurrences in one stream (no --split_streams_by: stream ()), 1,000 selected.
    # Chi-square over 10 equal blocks of the input order: 9 degrees of freedom, critical
    # value 27.88 at p = 0.001. Deterministic: fixed seed, fixed records.
    records = [MediaRecord(url=f"https://img.example.org/{i}.jpg", label="x", occurrence_key=i) for i in range(10_000)]
    run = Run(records, tmp_path, nb_samples=1000, seed=5)
    assert len(run.urls) == 1000 and run.per_stream == {(): 1000}
    blocks = Counter(int(url.rsplit("/", 1)[1].split(".")[0]) // 1000 for url in run.urls)
    chi_square = sum((blocks[b] - 100) ** 2 / 100 for b in range(10))
    assert chi_square < 27.88, blocks


def test_rank_hash_is_uniform_over_many_seeds():
    # Which 5 of 50 records a stream keeps, over 2,000 seeds: each record should be kept about
    # 200 times. Chi-square with 49 degrees of freedom, critical value 85.35 at p = 0.001.
    urls = [f"https://img.example.org/{i}.jpg" for i in range(50)]
    kept = Counter()
    for seed in range(2000):
        kept.update(sorted(urls, key=lambda u: (seeded_hash(seed, u, purpose=STREAM_SAMPLE_PURPOSE), u))[:5])
    chi_square = sum((kept[u] - 200) ** 2 / 200 for u in urls)
    assert chi_square < 85.35


def test_one_media_per_occurrence_picks_the_lowest_hash_and_all_media_keeps_every_one(tmp_path):
    records = make_records({("d", "s"): 40}, media_every=1)  # every occurrence has three media
    one = Run(records, tmp_path, seed=3)
    assert len(one.urls) == 40 and max(one.occurrences.values()) == 1
    assert set(one.urls) == expected_selection(records, seed=3)[0]
    every = Run(records, tmp_path, seed=3, one_media_per_occurrence=False)
    assert len(every.urls) == 120
    # The helper for sources picks the same media as the pipeline step.
    by_occurrence = defaultdict(list)
    for record in records:
        by_occurrence[record.occurrence_key].append(record)
    assert {one_media_of_occurrence(group, seed=3).url for group in by_occurrence.values()} == set(one.urls)


def test_weighted_quotas_follow_the_stream_sizes_given_and_the_records_bound_them(tmp_path):
    # Sizes as the GBIF API counts them; the records are the part of each stream that was read.
    sizes = {("d1", "s1"): 600, ("d1", "s2"): 7_000, ("d2", "s1"): 350, ("d2", "s3"): 1_200, ("d3", "s9"): 50}
    run = Run(RECORDS, tmp_path, nb_samples=90, weighted=True, seed=7, stream_sizes=sizes)
    expected, quotas = expected_selection(RECORDS, nb_samples=90, weighted=True, seed=7, weights=sizes)
    assert sorted(run.urls) == sorted(expected)
    # d1/s2 weighs most but only 7 of it was read, d3/s9 only 1: both held, the other 82 shared by size.
    assert quotas == {("d1", "s2"): 7, ("d1", "s1"): 23, ("d2", "s1"): 13, ("d2", "s3"): 46, ("d3", "s9"): 1}
    assert {stream: row["quota"] for stream, row in run.stats.items()} == quotas


def test_sizes_that_miss_a_stream_read_fall_back_to_weighing_the_records_read(tmp_path, caplog):
    run = Run(RECORDS, tmp_path, nb_samples=90, weighted=True, seed=7, stream_sizes={("d1", "s1"): 600, ("d1", "s2"): 7_000})
    assert sorted(run.urls) == sorted(expected_selection(RECORDS, nb_samples=90, weighted=True, seed=7)[0])
    assert "weighing the streams by the records read instead" in caplog.text


def test_empty_input_selects_nothing(tmp_path):
    run = Run([], tmp_path, nb_samples=10)
    assert run.urls == [] and run.stats == {}


@pytest.mark.parametrize("mode", ["weighted", "largest-balanced"])
def test_two_pass_held_on_disk_selects_the_same_records(mode, tmp_path):
    args, _ = MODES[mode]
    spill = tmp_path / "spill"
    spill.mkdir()
    in_memory = Run(RECORDS, tmp_path, seed=7, **args)
    on_disk = Run(RECORDS, tmp_path, seed=7, scratch_dir=str(spill), **args)
    assert sorted(on_disk.urls) == sorted(in_memory.urls)
    assert on_disk.stats == in_memory.stats
    assert list(spill.iterdir()) == [], "held records left on disk"


def test_from_options_reads_the_flags():
    options = PipelineOptions(["--nb_samples=50", "--nb_samples_per_stream=9", "--all_media", "--seed=4"]).view_as(GbifMediaOptions)
    sampler = stages.sample_streams(options)
    s = sampler.settings
    assert (s.nb_samples, s.nb_samples_per_stream, s.one_media_per_occurrence, s.seed, sampler.strategy) == (50, 9, False, 4, BOUNDED)
    # Without --all_media too: the sources keep one media per occurrence, the sampler never shuffles by occurrence.
    assert stages.sample_streams(PipelineOptions(["--nb_samples=50"]).view_as(GbifMediaOptions)).settings.one_media_per_occurrence is False
    with pytest.raises(OptionError, match="--nb_samples must be a positive number"):
        stages.sample_streams(PipelineOptions(["--nb_samples=0"]).view_as(GbifMediaOptions))
    with pytest.raises(OptionError, match="--nb_samples_per_stream must be at least 1"):
        stages.sample_streams(PipelineOptions(["--nb_samples_per_stream=-3"]).view_as(GbifMediaOptions))


@pytest.mark.slow
@pytest.mark.parametrize("args", [{"nb_samples": 100}, {"nb_samples": -1}], ids=["bounded", "two-pass"])
def test_two_worker_processes_select_the_same_records(args, tmp_path):
    in_process = Run(RECORDS, tmp_path, seed=21, **args)
    two_workers = Run(RECORDS, tmp_path, ["--direct_num_workers=2", "--direct_running_mode=multi_processing"], seed=21,
                      scratch_dir=str(tmp_path / "spill"), **args)
    assert sorted(two_workers.urls) == sorted(in_process.urls)
    assert two_workers.stats == in_process.stats


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=8),
    nb_samples=st.integers(min_value=1, max_value=150),
    cap=st.one_of(st.none(), st.integers(min_value=1, max_value=40)),
    order=st.randoms(use_true_random=False),
    chunks=st.integers(min_value=1, max_value=6),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_bounded_pruning_never_drops_a_record_the_exact_rule_selects(sizes, nb_samples, cap, order, chunks, seed):
    # Accumulators built over arbitrary splits of the input, pruned (compacted) after each
    # split as a runner does before a shuffle, then merged in a tree: the result must be the
    # exact selection, whatever the split and the order.
    records = make_records({(f"s{i}",): size for i, size in enumerate(sizes)}, media_every=10**9)
    order.shuffle(records)
    sampler = BoundedBalancedSampleFn(nb_samples, cap, seed)
    accumulators = []
    for part in range(chunks):
        accumulator = sampler.create_accumulator()
        for record in records[part::chunks]:
            accumulator = sampler.add_input(accumulator, record)
        accumulators.append(sampler.compact(accumulator))
    merged = sampler.merge_accumulators([sampler.merge_accumulators(accumulators[:2]), *accumulators[2:]])
    availability, quotas, selected = sampler.extract_output(merged)
    expected, expected_quotas = expected_selection(
        records, nb_samples=nb_samples, nb_samples_per_stream=cap, one_media_per_occurrence=False, seed=seed
    )
    assert quotas == expected_quotas
    assert availability == {(f"s{i}",): size for i, size in enumerate(sizes)}
    assert sorted(r.url for r in selected) == sorted(expected)
