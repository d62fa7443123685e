"""Reruns into one --output: the dataset folder and its manifest agree (every file has its manifest and
ATTRIBUTION.csv rows; --prune deletes earlier runs' files instead), and a killed run's temp leftovers go."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from beam_gbif.core.card import CARD_FILE, DERIVED_DATASET_FILE
from beam_gbif.core.records import IN_DATASET, Status
from beam_gbif.io.leftovers import remove_leftovers
from beam_gbif.io.store import store_for
from beam_gbif.testing.fake_gbif import FakeGbifApi
from beam_gbif.testing.media_server import MediaServer
from beam_gbif.testing.synthetic import SyntheticOccurrences
from beam_gbif.transforms.manifest import read_attribution, read_manifest
from pipelines.gbif_media import run

SPECIES = [5352251, 3190653]
DATASETS = ["7a3679ef-5582-4aaa-81f0-8c2545cafc81", "50c9509d-22c7-4a22-a47d-8c48425ef4a7"]
LAYOUT = {"manifest", "stats.json", "ATTRIBUTION.csv", "classes.json"}


@pytest.fixture(scope="module")
def api():
    with MediaServer() as media, FakeGbifApi(SyntheticOccurrences(SPECIES, DATASETS, per_stream=6, media_base_url=media.base_url,
                                                                    seed=5)) as server:
        yield server


def _run(api: FakeGbifApi, output: Path, *extra: str) -> None:
    query = json.dumps({"speciesKey": SPECIES, "datasetKey": DATASETS})
    assert run([f"--gbif_api_url={api.base_url}", f"--query={query}", "--label=speciesKey", f"--output={output}",
                "--allow_private_hosts", "--runner=FnApiRunner", "--random_subsets=train=0.5,test=0.5", *extra]) == 0


def _dataset_files(output: Path) -> list[str]:
    return sorted(str(p.relative_to(output)) for p in output.rglob("*") if p.is_file() and p.relative_to(output).parts[0] not in LAYOUT
                  and p.name != "metadata.jsonl" and not _is_card_file(p.relative_to(output)))


def _is_card_file(rel: Path) -> bool:
    """The dataset card and what it writes beside it (README.md, chart_*.png, derived_dataset.csv)."""
    return len(rel.parts) == 1 and (rel.name in (CARD_FILE, DERIVED_DATASET_FILE) or rel.name.startswith("chart_"))


def _assert_folder_and_manifest_agree(output: Path) -> None:
    files = _dataset_files(output)
    rows = read_manifest(str(output))
    with_file = Counter(r.path for r in rows if r.status in IN_DATASET)
    assert sorted(with_file.elements()) == files, "every file: exactly one manifest row; every row in the dataset: its file"
    assert sorted(row["path"] for row in read_attribution(str(output))) == files, "every file: exactly one ATTRIBUTION row"


def test_a_rerun_with_another_selection_keeps_or_prunes_the_earlier_files(api, tmp_path):
    output = tmp_path / "dataset"
    _run(api, output, "--nb_samples=8", "--seed=1")
    first = {r.path: r for r in read_manifest(str(output)) if r.path}
    _run(api, output, "--nb_samples=6", "--seed=2")

    _assert_folder_and_manifest_agree(output)
    rows = read_manifest(str(output))
    kept = [r for r in rows if r.status == Status.KEPT_FROM_EARLIER_RUN]
    selected = [r for r in rows if r.status != Status.KEPT_FROM_EARLIER_RUN]
    assert len(selected) == 6 and kept, "another seed selects other records: the earlier ones stay, kept"
    assert {r.path for r in kept} == set(first) - {r.path for r in selected}
    assert all(r.replace(status=first[r.path].status) == first[r.path] for r in kept), "an earlier row, status aside"
    stats = json.loads((output / "stats.json").read_text())
    assert stats["kept_from_earlier_run"] == stats["by_status"][Status.KEPT_FROM_EARLIER_RUN] == len(kept)
    assert stats["files"] == len(_dataset_files(output)) and stats["records"] == len(rows)

    _run(api, output, "--nb_samples=6", "--seed=2", "--prune")
    _assert_folder_and_manifest_agree(output)
    rows = read_manifest(str(output))
    assert {r.status for r in rows} <= {Status.SKIPPED_EXISTING, Status.DOWNLOADED} and len(rows) == 6
    assert set(_dataset_files(output)) == {r.path for r in selected}, "the earlier-only files are gone"
    assert json.loads((output / "stats.json").read_text())["counters"]["files_pruned"] == len(kept)


def _leave_leftovers(output: Path) -> list[Path]:
    """What a run killed mid-way leaves: Beam's sink temp folders, hidden temp files of atomic writes."""
    leftovers = [output / "beam-temp-ATTRIBUTION.csv-6f1c2a9e0b7d11ef/3c7e.csv",
                 output / "manifest" / "beam-temp-part-20261204T170000-ab12cd-77aa/0f1e.avro",
                 output / "train" / "5352251" / ".0a1b2c3d4e5f.jpg.0123456789ab.tmp",
                 output / ".stats.json.5e6f7a8b9c0d.tmp"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    return leftovers


def test_a_run_removes_the_temp_leftovers_of_a_killed_run(api, tmp_path):
    output = tmp_path / "dataset"
    leftovers = _leave_leftovers(output)
    _run(api, output, "--nb_samples=2", "--seed=3")
    assert not any(path.exists() for path in leftovers)
    hidden = [p for p in output.rglob("*") if any(part.startswith((".", "beam-temp-")) for part in p.relative_to(output).parts)]
    assert hidden == [], "nothing hidden or temporary remains in --output"
    _assert_folder_and_manifest_agree(output)


def test_leftovers_on_gcs_are_removed_and_nothing_else(tmp_path):
    from beam_gbif.testing.gcs_emulator import GcsEmulator

    with GcsEmulator(bucket="leftovers") as gcs:
        store = store_for(f"gs://{gcs.bucket}/dataset")
        keep = ["ATTRIBUTION.csv", "manifest/part-1-00000-of-00001.avro", "train/sp/a.jpg", "beam-temp.jpg"]
        gone = ["beam-temp-ATTRIBUTION.csv-6f1c/1.csv", "beam-temp-ATTRIBUTION.csv-6f1c/2.csv", "manifest/beam-temp-part-1-aa/x.avro"]
        for rel in keep + gone:
            store.write_atomic(rel, b"x")
        assert sorted(remove_leftovers(store)) == ["beam-temp-ATTRIBUTION.csv-6f1c/", "manifest/beam-temp-part-1-aa/"]
        assert store.list() == sorted(keep)
