"""AssignSplits: seeded per-occurrence random subsets and whole streams routed by subset_streams."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_gbif.core.errors import OptionError
from beam_gbif.core.records import MediaRecord
from beam_gbif.testing.collect import run_transform
from beam_gbif.transforms.splits import AssignSplits, SplitSettings, random_split
from pipelines import stages
from pipelines.options import GbifMediaOptions

RUNNER = "--runner=FnApiRunner"


def make_records(occurrences: int, media_per_occurrence: int = 3) -> list[MediaRecord]:
    """Streams (datasetKey, speciesKey) cycle over 2 datasets × 3 species."""
    records = []
    for occurrence in range(occurrences):
        dataset, species = f"dataset-{occurrence % 2}", str(100 + occurrence % 3)
        for media in range(media_per_occurrence):
            records.append(
                MediaRecord(
                    url=f"https://img.example.org/{occurrence}/{media}.jpg",
                    label=species,
                    occurrence_key=occurrence,
                    stream=(dataset, species),
                    dataset_key=dataset,
                )
            )
    return records


def run_splits(records, tmp_path: Path, **splitter_args) -> dict[str, MediaRecord]:
    """url → assigned record."""
    assigned, _ = run_transform(AssignSplits(SplitSettings(**splitter_args)), tmp_path, records=records)
    return {record.url: record for record in assigned}


RECORDS = make_records(600)
RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1}


def test_random_subsets_same_seed_same_assignment_and_occurrences_never_straddle_splits(tmp_path):
    first = run_splits(RECORDS, tmp_path, random_subsets=RATIOS, seed=9)
    again = run_splits(list(reversed(RECORDS)), tmp_path, random_subsets=RATIOS, seed=9)
    other = run_splits(RECORDS, tmp_path, random_subsets=RATIOS, seed=10)
    assert len(first) == len(RECORDS)
    assert {url: r.split for url, r in first.items()} == {url: r.split for url, r in again.items()}
    assert {url: r.split for url, r in first.items()} != {url: r.split for url, r in other.items()}
    splits_of_occurrence = defaultdict(set)
    for record in first.values():
        splits_of_occurrence[record.occurrence_key].add(record.split)
    assert all(len(splits) == 1 for splits in splits_of_occurrence.values())
    assert {r.split for r in first.values()} == set(RATIOS)
    # Only the split changes.
    assert all(first[r.url].replace(split="") == r for r in RECORDS)


def test_ratios_are_respected_on_a_large_input():
    boundaries = [(0.8, "train"), (0.9, "val"), (1.0, "test")]
    counts = Counter(random_split(key, boundaries, seed=2) for key in range(100_000))
    # Binomial standard deviations: ~126 for train, ~95 for val and test; allow 4.5 of them.
    assert abs(counts["train"] - 80_000) < 570
    assert abs(counts["val"] - 10_000) < 430
    assert abs(counts["test"] - 10_000) < 430


def test_subset_streams_route_whole_streams_and_random_subsets_take_the_rest(tmp_path):
    assigned = run_splits(
        RECORDS,
        tmp_path,
        subset_streams={"test": {"datasetKey": ["dataset-1"], "speciesKey": "101"}, "val": {"dataset_key": "dataset-0", "speciesKey": 102}},
        random_subsets={"train": 0.5, "extra": 0.5},
        split_streams_by=["datasetKey", "speciesKey"],
        seed=0,
    )
    by_stream = defaultdict(Counter)
    for record in assigned.values():
        by_stream[record.stream][record.split] += 1
    assert by_stream[("dataset-1", "101")] == Counter({"test": 300})  # 100 occurrences × 3 media
    assert by_stream[("dataset-0", "102")] == Counter({"val": 300})
    for stream in [("dataset-0", "100"), ("dataset-1", "100"), ("dataset-0", "101"), ("dataset-1", "102")]:
        assert set(by_stream[stream]) == {"train", "extra"}


def test_a_catch_all_takes_every_unmatched_record(tmp_path):
    assigned = run_splits(
        RECORDS, tmp_path, subset_streams={"test": {"datasetKey": "dataset-1"}, "train": "*"}, split_streams_by=["speciesKey"]
    )
    assert {r.split for r in assigned.values() if r.dataset_key == "dataset-1"} == {"test"}
    assert {r.split for r in assigned.values() if r.dataset_key == "dataset-0"} == {"train"}


def test_a_split_given_by_the_input_is_kept(tmp_path):
    preset = [r.replace(split="holdout") if r.occurrence_key % 5 == 0 else r for r in RECORDS[:90]]
    assigned = run_splits(preset, tmp_path, random_subsets=RATIOS, seed=1)
    assert all(assigned[r.url].split == "holdout" for r in preset if r.split)
    assert {assigned[r.url].split for r in preset if not r.split} <= set(RATIOS)


def test_without_split_options_records_pass_through_unchanged(tmp_path):
    splitter = AssignSplits()
    assert not splitter.assigns_splits
    assigned = run_splits(RECORDS[:30], tmp_path)
    assert all(assigned[r.url] == r and r.split == "" for r in RECORDS[:30])


def test_from_options_parses_template_strings():
    options = PipelineOptions(
        [
            "--random_subsets=train=0.9,test=0.1",
            '--subset_streams={"holdout": {"datasetKey": ["d-7"]}}',
            "--split_streams_by=datasetKey,speciesKey",
            "--seed=5",
        ]
    ).view_as(GbifMediaOptions)
    splitter = stages.assign_splits(options)
    assert splitter.assigns_splits
    assert splitter._rules == [("holdout", ((("stream", 0), frozenset({"d-7"})),))]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subset_streams": {"test": {"colour": ["red"]}}, "random_subsets": {"train": 1.0}}, "field 'colour' is neither"),
        ({"subset_streams": {"test": {"datasetKey": "a"}}}, "records that match no rule need a split"),
        ({"subset_streams": {"a": "*", "b": "*"}}, "only one split can take the rest"),
        ({"subset_streams": {"a": "*"}, "random_subsets": {"train": 1.0}}, "--random_subsets would never apply"),
        ({"subset_streams": {"../x": "*"}}, "not a valid split name"),
        ({"subset_streams": {"test\n": "*"}}, "split name 'test\\\\n' holds a control character"),
        ({"subset_streams": {"CON": "*"}}, "split name 'CON' is a reserved device name on Windows"),
        ({"random_subsets": {"train": 0.9, "nul.txt": 0.1}}, "--random_subsets: split name 'nul.txt' is a reserved device name"),
        ({"random_subsets": {"train\t": 0.9, "test": 0.1}}, "--random_subsets: split name 'train\\\\t' holds a control character"),
        ({"random_subsets": {"train": 0.9, "Lpt3 ": 0.1}}, "split name 'Lpt3 ' is a reserved device name"),
        ({"subset_streams": {"test": {"datasetKey": []}}, "random_subsets": {"train": 1.0}}, "needs a value"),
        ({"random_subsets": {"train": 0.5, "test": 0.4}}, "must sum to 1"),
    ],
)
def test_bad_split_options_are_clear_errors(kwargs, message):
    with pytest.raises(OptionError, match=message):
        AssignSplits(SplitSettings(**kwargs))
