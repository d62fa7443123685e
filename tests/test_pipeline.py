"""The whole job on the local runner against the fake GBIF API and the media server."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from beam_gbif.core.records import Status
from beam_gbif.testing.fake_gbif import FakeGbifApi, RecordedOccurrences
from beam_gbif.testing.synthetic import SyntheticOccurrences
from beam_gbif.transforms.manifest import read_manifest
from pipelines.demo import demo_argv
from pipelines.gbif_media import run

SPECIES = [5352251, 3190653]
DATASETS = ["7a3679ef-5582-4aaa-81f0-8c2545cafc81", "50c9509d-22c7-4a22-a47d-8c48425ef4a7"]


@pytest.fixture(scope="module")
def api(media):
    with FakeGbifApi(SyntheticOccurrences(SPECIES, DATASETS, per_stream=12, media_base_url=media.base_url, seed=3,
                                         duplicate_url_fraction=0.2)) as server:
        yield server


def _argv(api: FakeGbifApi, output: Path, *extra: str) -> list[str]:
    query = json.dumps({"speciesKey": SPECIES, "datasetKey": DATASETS})
    return [f"--gbif_api_url={api.base_url}", f"--query={query}", "--label=speciesKey", f"--output={output}",
            "--allow_private_hosts", "--runner=FnApiRunner", *extra]


def _dataset_files(output: Path) -> set[str]:
    skip = {"manifest", "stats.json", "ATTRIBUTION.csv", "classes.json"}
    return {str(p.relative_to(output)) for p in output.rglob("*")
            if p.is_file() and p.relative_to(output).parts[0] not in skip and p.name != "metadata.jsonl"}


def test_query_to_imagefolder_tree_manifest_and_stats(api, media, tmp_path):
    output = tmp_path / "dataset"
    assert run(_argv(api, output, "--random_subsets=train=0.75,test=0.25", "--all_media")) == 0

    rows = read_manifest(str(output))
    occurrences = [api.store.occurrence(i) for i in range(len(api.store))]
    expected_urls = {m["identifier"] for o in occurrences for m in o["media"] if m.get("type") == "StillImage" and m.get("identifier")}
    assert {row.url for row in rows} == expected_urls, "one manifest row per selected (deduplicated) image"
    assert len(rows) == len(expected_urls)

    # ImageFolder layout: split/label/sha1(url).ext, exactly the files the manifest lists.
    assert _dataset_files(output) == {row.path for row in rows}
    for row in rows:
        assert row.status == Status.DOWNLOADED
        split, label, name = Path(row.path).parts
        assert (split, label, name.split(".")[0]) == (row.split, row.label, row.basename)
        assert (output / row.path).read_bytes() == media.body(Path(row.url).stem)
    labels_by_key = {o["key"]: str(o["speciesKey"]) for o in occurrences}
    assert all(row.label == labels_by_key[row.occurrence_key] for row in rows)

    stats = json.loads((output / "stats.json").read_text())
    by_status = stats["by_status"]
    downloaded, skipped = by_status.get("DOWNLOADED", 0), by_status.get("SKIPPED_EXISTING", 0)
    failed = sum(n for status, n in by_status.items() if Status.is_failure(status))
    assert downloaded + skipped + failed == stats["records"] == len(rows)
    assert stats["by_split"] == dict(Counter(row.split for row in rows))
    assert stats["by_label"] == dict(Counter(row.label for row in rows))
    image_items = [m["identifier"] for o in occurrences for m in o["media"] if m.get("type") == "StillImage" and m.get("identifier")]
    assert len(image_items) > len(expected_urls), "the synthetic store repeats some URLs: the case below must not be vacuous"
    assert stats["counters"]["duplicate_urls"] == len(image_items) - len(expected_urls) and stats["seconds"] > 0

    # A rerun downloads nothing, rewrites the manifest (not appended) with SKIPPED_EXISTING rows.
    hits_before = media.total_hits
    assert run(_argv(api, output, "--random_subsets=train=0.75,test=0.25", "--all_media")) == 0
    assert media.total_hits == hits_before
    rerun = read_manifest(str(output))
    assert sorted(r.url for r in rerun) == sorted(r.url for r in rows)
    assert {r.status for r in rerun} == {Status.SKIPPED_EXISTING}
    assert len(list((output / "manifest").iterdir())) == 1


def test_same_seed_same_splits_and_occurrences_never_straddle_splits(api, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for output in (first, second):
        assert run(_argv(api, output, "--random_subsets=train=0.5,test=0.5", "--all_media", "--seed=7")) == 0
    splits_a = {r.url: r.split for r in read_manifest(str(first))}
    splits_b = {r.url: r.split for r in read_manifest(str(second))}
    assert splits_a == splits_b and set(splits_a.values()) == {"train", "test"}
    by_occurrence: dict[int, set[str]] = {}
    for record in read_manifest(str(first)):
        by_occurrence.setdefault(record.occurrence_key, set()).add(record.split)
    assert all(len(splits) == 1 for splits in by_occurrence.values())
    assert any(len([r for r in read_manifest(str(first)) if r.occurrence_key == key]) > 1 for key in by_occurrence)


def test_demo_arguments_run_the_balanced_demo(api, tmp_path):
    output = tmp_path / "demo"
    argv = demo_argv(api.base_url, str(output)) + ["--runner=FnApiRunner"]
    argv = [a for a in argv if not a.startswith("--query")] + [f"--query={json.dumps({'speciesKey': SPECIES, 'datasetKey': DATASETS})}"]
    # The fixture's streams hold 12 occurrences each, below the demo's cap of 25: cap at 5 so it binds.
    assert run(argv + ["--nb_samples_per_stream=5"]) == 0
    rows = read_manifest(str(output))
    assert Counter((r.label, r.dataset_key) for r in rows) == {(str(s), d): 5 for s in SPECIES for d in DATASETS}
    assert len({r.occurrence_key for r in rows}) == len(rows), "one media per occurrence by default"
    assert {r.split for r in rows} == {"train", "test"}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--query={\"speciesKey\": [1,"], "not valid JSON"),
        (["--query={\"speciesKeys\": [1]}"], "speciesKeys"),
        (["--random_subsets=train=0.9,test=0.2"], "sum to 1"),
    ],
)
def test_bad_input_is_one_clear_line(api, tmp_path, capsys, extra, message):
    argv = [a for a in _argv(api, tmp_path / "out") if not (extra[0].startswith("--query") and a.startswith("--query"))]
    assert run(argv + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("beam-gbif: error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_output_that_is_a_file_is_refused(api, tmp_path, capsys):
    output = tmp_path / "a_file"
    output.write_text("keep me")
    code = run(_argv(api, output))
    assert code != 0 and "a_file" in capsys.readouterr().err
    assert output.read_text() == "keep me"


def test_hostile_labels_never_leave_the_output(media, tmp_path):
    occurrences = [
        {"key": 1, "datasetKey": "d", "scientificName": "../../etc", "media": [{"type": "StillImage", "identifier": media.url("evil-1")}]},
        {"key": 2, "datasetKey": "d", "scientificName": "a/b", "media": [{"type": "StillImage", "identifier": media.url("evil-2")}]},
        {"key": 3, "datasetKey": "d", "scientificName": "..", "media": [{"type": "StillImage", "identifier": media.url("evil-3")}]},
    ]
    output = tmp_path / "root" / "out"
    with FakeGbifApi(RecordedOccurrences(occurrences)) as api:
        argv = [f"--gbif_api_url={api.base_url}", "--query={\"datasetKey\": \"d\"}", "--label=scientificName", f"--output={output}",
                "--allow_private_hosts", "--runner=FnApiRunner"]
        assert run(argv) == 0
    written = [p for p in (tmp_path / "root").rglob("*.jpg")]
    assert len(written) == 3
    assert all(output in p.parents and p.parent.parent == output for p in written)
    assert {r.label for r in read_manifest(str(output))} == {"../../etc", "a/b", ".."}
