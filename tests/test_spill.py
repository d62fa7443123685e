"""GroupByKeyOnDisk: the same groups as GroupByKey, through files, with nothing left behind."""

from __future__ import annotations

import random
import tempfile
from collections import defaultdict
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam import coders
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from beam_gbif.transforms.spill import (
    SPILL_REPARTITIONS,
    SPILL_STREAMED_PARTS,
    GroupByKeyOnDisk,
    HoldOnDisk,
    _BucketFiles,
    _entries,
    _GroupBuckets,
    default_scratch_root,
    filesystem_type,
    remove_spill_folders,
    warn_if_short_of_space,
)
from beam_gbif.transforms.stats import metric_counters
from pipelines.gbif_media import build, make_options
from pipelines.options import GbifMediaOptions
from pipelines.stages import scratch_dir_for


def _pairs(count: int, keys: int, seed: int) -> list[tuple[str, bytes]]:
    generator = random.Random(seed)
    return [(f"k{generator.randrange(keys)}", generator.randbytes(generator.randrange(0, 40))) for _ in range(count)]


def _expected(*inputs: list[tuple[str, bytes]]) -> list[tuple[str, list[bytes]]]:
    groups: dict[str, list[bytes]] = defaultdict(list)
    for pairs in inputs:
        for key, value in pairs:
            groups[key].append(value)
    return [(key, sorted(values)) for key, values in groups.items()]


def _run(inputs: list[list[tuple[str, bytes]]], transform: GroupByKeyOnDisk, runner_args: tuple[str, ...] = ()) -> dict[str, int]:
    """Runs the grouping, checks its groups against a plain-Python grouping; returns the spill counters."""
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner", *runner_args])) as pipeline:
        pcolls = tuple(pipeline | f"Input{index}" >> beam.Create(pairs) for index, pairs in enumerate(inputs))
        grouped = (pcolls if len(pcolls) > 1 else pcolls[0]) | transform
        # A lambda, not a module function: worker processes cannot import this test module by name.
        assert_that(grouped | beam.MapTuple(lambda key, values: (key, sorted(values))), equal_to(_expected(*inputs)))
    counters = metric_counters(pipeline.result)
    return {name: counters.get(name, 0) for name in (SPILL_REPARTITIONS, SPILL_STREAMED_PARTS)}


def test_groups_like_group_by_key_and_removes_its_files(tmp_path: Path) -> None:
    pairs = _pairs(5000, keys=700, seed=1)
    assert _run([pairs], GroupByKeyOnDisk(str(tmp_path), value_coder=coders.BytesCoder(), buckets=7)) == {
        SPILL_REPARTITIONS: 0, SPILL_STREAMED_PARTS: 0}
    assert list(tmp_path.iterdir()) == [], "spill files or folders left behind"


def test_buckets_larger_than_the_limit_are_repartitioned_on_disk(tmp_path: Path) -> None:
    # ~5000 entries of ~33 bytes in 2 buckets of at most 4 KB: both buckets (~80 KB each) are split on disk.
    pairs = _pairs(5000, keys=2000, seed=2)
    counters = _run([pairs], GroupByKeyOnDisk(str(tmp_path), value_coder=coders.BytesCoder(), buckets=2, max_bucket_bytes=4096))
    assert counters[SPILL_REPARTITIONS] >= 2 and counters[SPILL_STREAMED_PARTS] == 0  # both buckets, and every part then fits
    assert list(tmp_path.iterdir()) == []


def test_a_bucket_needing_more_parts_than_files_open_at_once_is_split_again(tmp_path: Path) -> None:
    # One ~165 KB bucket at 256 bytes a part would need ~1,300 parts: 256 are opened, each then split again.
    pairs = _pairs(5000, keys=4000, seed=9)
    counters = _run([pairs], GroupByKeyOnDisk(str(tmp_path), value_coder=coders.BytesCoder(), buckets=1, max_bucket_bytes=256))
    assert counters[SPILL_REPARTITIONS] > 1 + 200  # the first split, then most of its 256 parts
    assert list(tmp_path.iterdir()) == []


def test_one_key_larger_than_the_limit_is_one_group_streamed_from_disk(tmp_path: Path) -> None:
    pairs = [("hot", bytes([i % 256]) * 20) for i in range(3000)] + _pairs(500, keys=50, seed=3)
    counters = _run([pairs], GroupByKeyOnDisk(str(tmp_path), value_coder=coders.BytesCoder(), buckets=1, max_bucket_bytes=1024))
    # One repartition shows the hot key's part does not split; its values are then read from disk, not held.
    assert counters == {SPILL_REPARTITIONS: 1, SPILL_STREAMED_PARTS: 1}
    assert list(tmp_path.iterdir()) == []


def test_streamed_values_can_be_iterated_again(tmp_path: Path) -> None:
    files = _BucketFiles(str(tmp_path), buckets=1, depth=0)
    for index in range(50):
        files.add(b"hot" if index % 5 else b"cold", str(index).encode())
    paths = sorted(files.close().values())
    group = _GroupBuckets(1, coders.BytesCoder(), coders.StrUtf8Coder())
    groups = dict(group._group_streamed(paths))
    assert list(groups[b"cold"]) == [str(i) for i in range(0, 50, 5)]
    assert list(groups[b"hot"]) == list(groups[b"hot"]) and len(list(groups[b"hot"])) == 40


def test_several_inputs_are_grouped_together(tmp_path: Path) -> None:
    left, right = _pairs(800, keys=100, seed=4), _pairs(1200, keys=150, seed=5)
    _run([left, right], GroupByKeyOnDisk(str(tmp_path), value_coder=coders.BytesCoder(), buckets=5))
    _run([left, right], GroupByKeyOnDisk(None, value_coder=coders.BytesCoder()))


@pytest.mark.slow
def test_two_worker_processes_share_the_spill_folder(tmp_path: Path) -> None:
    pairs = _pairs(20000, keys=3000, seed=6)
    counters = _run([pairs], GroupByKeyOnDisk(str(tmp_path), value_coder=coders.BytesCoder(), buckets=8, max_bucket_bytes=16384),
                    ("--direct_num_workers=2", "--direct_running_mode=multi_processing"))
    assert counters[SPILL_REPARTITIONS] > 0
    assert list(tmp_path.iterdir()) == []


def test_hold_on_disk_gives_back_every_element_and_removes_its_files(tmp_path: Path) -> None:
    values = [bytes([i % 256]) * (i % 7) for i in range(3000)]
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        elements = pipeline | beam.Create(values)
        total = elements | beam.combiners.Count.Globally()
        held = elements | HoldOnDisk(str(tmp_path), coders.BytesCoder(), until=total)
        assert_that(held, equal_to(values))
    assert list(tmp_path.iterdir()) == []
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    elements = pipeline | beam.Create(values)
    assert elements | "Identity" >> HoldOnDisk(None, coders.BytesCoder(), until=elements) is elements


def test_without_a_scratch_dir_it_is_a_plain_group_by_key(tmp_path: Path) -> None:
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    _ = pipeline | beam.Create([("a", b"1")]) | "Group" >> GroupByKeyOnDisk(None)
    labels = {transform.unique_name for transform in pipeline.to_runner_api().components.transforms.values()}
    assert "Group/GroupByKey" in labels
    assert not any("SpillToBuckets" in label for label in labels)


def test_truncated_spill_file_is_an_error_not_a_short_group(tmp_path: Path) -> None:
    files = _BucketFiles(str(tmp_path / "spill"), buckets=1, depth=0)
    files.add(b"key", b"value" * 10)
    (path,) = files.close().values()
    Path(path).write_bytes(Path(path).read_bytes()[:-3])
    with pytest.raises(OSError, match="is truncated"):
        list(_entries(path))


def test_files_already_consumed_are_a_clear_error(tmp_path: Path) -> None:
    group = _GroupBuckets(1024, coders.StrUtf8Coder(), coders.BytesCoder())
    with pytest.raises(FileNotFoundError, match="spill-gone.*cannot be replayed"):
        list(group.process((0, [str(tmp_path / "spill-gone")])))


def test_local_runners_spill_and_remote_ones_do_not() -> None:
    assert scratch_dir_for(make_options([]).view_as(GbifMediaOptions)) == default_scratch_root()
    assert scratch_dir_for(make_options(["--runner=DirectRunner"])) == default_scratch_root()
    assert scratch_dir_for(make_options(["--runner=DataflowRunner"])) is None


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        GroupByKeyOnDisk("/unused", buckets=0)


@pytest.mark.usefixtures("fresh_dwca_memo")
def test_a_local_dwca_job_joins_and_deduplicates_on_disk(real_zip: Path, tmp_path: Path) -> None:
    options = make_options([f"--dwca={real_zip}", f"--dwca_root_path={tmp_path / 'cache'}", f"--output={tmp_path / 'out'}"])
    pipeline = beam.Pipeline(options=options)
    build(pipeline, options)
    labels = {transform.unique_name for transform in pipeline.to_runner_api().components.transforms.values()}
    assert {"ReadMedia/JoinByGbifId/SpillToBuckets", "ReadMedia/JoinByGbifId/SpillToBuckets1",
            "FilterMedia/DeduplicateUrls/GroupByUrl/SpillToBuckets", "DownloadMedia/GroupByHostShard/SpillToBuckets"} <= labels
    weighted = make_options([f"--dwca={real_zip}", f"--dwca_root_path={tmp_path / 'cache'}", f"--output={tmp_path / 'out'}",
                             "--nb_samples=10", "--weighted_streams"])
    pipeline = beam.Pipeline(options=weighted)
    build(pipeline, weighted)
    labels = {transform.unique_name for transform in pipeline.to_runner_api().components.transforms.values()}
    assert "SampleStreams/HoldUntilQuotas/SpillToFiles" in labels


def _fail_on_the_first_group(group: tuple[str, list[bytes]]) -> None:
    raise RuntimeError("a consumer fails halfway")


def test_a_failed_run_leaves_its_spill_files_until_they_are_removed(tmp_path: Path) -> None:
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    grouped = pipeline | beam.Create(_pairs(500, keys=40, seed=8)) | GroupByKeyOnDisk(str(tmp_path), value_coder=coders.BytesCoder())
    _ = grouped | beam.Map(_fail_on_the_first_group)
    with pytest.raises(Exception, match="a consumer fails halfway"):
        pipeline.run().wait_until_finish()
    left = list(tmp_path.iterdir())
    assert left, "the failure happened after the spill: its files are still there"
    assert remove_spill_folders(pipeline) == [str(left[0])]
    assert list(tmp_path.iterdir()) == []


def test_short_of_space_is_a_warning_naming_the_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    not_yet_created = tmp_path / "spill" / "run"
    assert warn_if_short_of_space(str(not_yet_created), 0, "reading x.zip") is False
    assert warn_if_short_of_space(str(not_yet_created), 10**18, "reading x.zip") is True
    assert f"reading x.zip shuffles through {not_yet_created}" in caplog.text and "point TMPDIR" in caplog.text


@pytest.mark.usefixtures("fresh_dwca_memo")
def test_a_dwca_read_checks_the_spill_folder_has_room(real_zip: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from beam_gbif.transforms.sources import dwca

    def apply_source() -> None:
        dwca.plan_archive(dwca.DwcaReadSettings(str(real_zip), cache_root=str(tmp_path / "cache"), scratch_dir=str(tmp_path / "spill")))

    apply_source()
    assert "shuffles through" not in caplog.text
    monkeypatch.setattr(dwca, "_SPILL_PER_EXTRACTED_BYTE", 10**15)  # the real archive now "needs" more than any disk
    apply_source()
    assert f"shuffles through {tmp_path / 'spill'}" in caplog.text


MOUNTS = """/dev/vda / ext4 rw,relatime 0 0
tmpfs /tmp tmpfs rw,nosuid 0 0
/dev/vdb /tmp/big\\040disk xfs rw 0 0
proc /proc proc rw 0 0
"""


def test_filesystem_type_is_the_innermost_mount() -> None:
    assert filesystem_type("/home/me/data", MOUNTS) == "ext4"
    assert filesystem_type("/tmp", MOUNTS) == "tmpfs"
    assert filesystem_type("/tmp/x/y", MOUNTS) == "tmpfs"
    assert filesystem_type("/tmp/big disk/spill", MOUNTS) == "xfs"
    assert filesystem_type("/tmpfoo", MOUNTS) == "ext4"  # a prefix of the name is not a parent folder


def test_an_in_memory_temp_folder_is_not_used_for_spills(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if filesystem_type("/dev/shm") != "tmpfs":
        pytest.skip("this machine has no tmpfs at /dev/shm")
    monkeypatch.setenv("BEAM_GBIF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", "/dev/shm")
    assert default_scratch_root() == str(tmp_path / "cache" / "spill")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert default_scratch_root() == str(tmp_path / "beam-gbif-spill")


def test_streamed_groups_survive_a_stage_boundary(tmp_path: Path) -> None:
    # A Reshuffle makes the runner encode the groups between stages: a streamed group must be
    # read then, while its spill files still exist, not pickled as a reference to them.
    pairs = [("hot", bytes([i % 256]) * 20) for i in range(3000)] + _pairs(300, keys=30, seed=10)
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        grouped = pipeline | beam.Create(pairs) | GroupByKeyOnDisk(str(tmp_path), value_coder=coders.BytesCoder(), buckets=1,
                                                                   max_bucket_bytes=1024)
        sorted_groups = grouped | beam.Reshuffle() | beam.MapTuple(lambda key, values: (key, sorted(values)))
        assert_that(sorted_groups, equal_to(_expected(pairs)))
    assert list(tmp_path.iterdir()) == []
