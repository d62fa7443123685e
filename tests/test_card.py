"""The dataset card (README.md), derived_dataset.csv and the charts: their numbers are stats.json's."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from beam_gbif.core.card import TOP_LABELS, count_rows, derived_dataset_csv, hf_license, render_card, size_category
from beam_gbif.core.records import IN_DATASET
from beam_gbif.testing.fake_gbif import FakeGbifApi
from beam_gbif.testing.synthetic import SyntheticOccurrences
from beam_gbif.transforms import charts
from beam_gbif.transforms.card import WriteCard, write_card
from beam_gbif.transforms.manifest import read_manifest
from pipelines.demo import DEMO_DATASETS, DEMO_SPECIES, demo_argv
from pipelines.gbif_media import run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def dataset(media, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("card") / "dataset"
    occurrences = SyntheticOccurrences(DEMO_SPECIES, DEMO_DATASETS, per_stream=12, media_base_url=media.base_url, seed=5)
    with FakeGbifApi(occurrences) as api:
        assert run(demo_argv(api.base_url, str(output)) + ["--nb_samples_per_stream=8"]) == 0
    return output


def _section(card: str, heading: str) -> str:
    return card.split(heading, 1)[1].split("\n#", 1)[0]


def _table(text: str) -> dict[str, list[int]]:
    """The first Markdown table of ``text``: first cell → the numbers of the other cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = list(itertools.takewhile(lambda line: line.startswith("| "), lines[start:]))[2:]
    return {cells[0]: [int(c) for c in cells[1:]] for cells in ([c.strip() for c in row.strip("|").split("|")] for row in rows)}


def test_card_numbers_are_those_of_stats_json(dataset: Path) -> None:
    stats = json.loads((dataset / "stats.json").read_text())
    card = (dataset / "README.md").read_text()
    front = card.split("---\n")[1]
    assert "task_categories:\n- image-classification" in front and f"- {size_category(stats['files'])}" in front
    assert set(re.findall(r"^- (cc[\w.-]+|other)$", front, re.M)) == {hf_license(code) for code in stats["by_license"]}
    splits = _table(_section(card, "### Per split"))
    assert {name: row[0] for name, row in splits.items()} == stats["by_split"]
    assert {name: row[1] for name, row in splits.items()} == {s: sum(v.values()) for s, v in stats["files_by_split_label"].items()}
    labels = _table(_section(card, "### Per label"))
    assert {name: row[0] for name, row in labels.items()} == stats["by_label"]
    assert sum(row[1] for row in labels.values()) == stats["files"] and sum(row[2] for row in labels.values()) == stats["failed"]
    streams = _table(_section(card, "### Per stream"))
    assert {row["stream"]: [row["available"], row["quota"], row["stored"]] for row in stats["streams"]} == streams
    assert all(quota == 8 for _, quota, _ in streams.values()) and sum(row[2] for row in streams.values()) == stats["files"]
    assert _table(_section(card, "## Licences")) == {code: [n] for code, n in stats["by_license"].items()}
    assert "beam-gbif --gbif_api_url=" in card and "--nb_samples_per_stream=8" in card and "seed 0" in card
    assert "derived dataset" in card and "ImageFolder(" in card


def test_derived_dataset_csv_counts_the_stored_images_per_gbif_dataset(dataset: Path) -> None:
    with open(dataset / "derived_dataset.csv", newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        assert next(reader) == ["datasetKey", "count"]
        rows = {key: int(count) for key, count in reader}
    stored = Counter(row.dataset_key for row in read_manifest(str(dataset)) if row.status in IN_DATASET)
    assert rows == dict(stored) and set(rows) == set(DEMO_DATASETS)
    assert sum(rows.values()) == json.loads((dataset / "stats.json").read_text())["files"]


def test_charts_beside_the_card_are_pngs_it_embeds(dataset: Path) -> None:
    card = (dataset / "README.md").read_text()
    for name in ("chart_labels.png", "chart_splits.png", "chart_licences.png"):
        assert (dataset / name).read_bytes().startswith(PNG_MAGIC)
        assert f"]({name})" in card
    assert not (dataset / "chart_failures.png").exists(), "no failures, no failure chart"


FAILING_STATS = {
    "records": 10, "files": 6, "failed": 4, "bytes": 600,
    "by_status": {"DOWNLOADED": 6, "FAILED_HTTP": 3, "FAILED_TIMEOUT": 1},
    "by_split": {"train": 7, "test": 3}, "by_label": {"a": 5, "b": 3, "c": 2},
    "by_license": {"CC_BY_4_0": 6, "CC0_1_0": 3, "UNKNOWN": 1},
    "files_by_split_label": {"train": {"a": 3, "b": 1}, "test": {"a": 1, "c": 1}},
    "failed_by_split_label": {"train": {"a": 1, "b": 1}, "test": {"b": 1, "c": 1}},
    "failed_by_host": {"a.example.org": 3, "b.example.org": 1}, "files_by_dataset": {"d1": 4, "d2": 2},
}


def test_charts_have_one_bar_per_label_split_licence_reason_and_host() -> None:
    from matplotlib.image import imread

    pngs = {name: png for name, _, png in charts.chart_pngs(FAILING_STATS)}
    expected = {"chart_labels.png": 3, "chart_splits.png": 2, "chart_licences.png": 3, "chart_failures.png": 2,
                "chart_failure_hosts.png": 2}
    assert set(pngs) == set(expected)
    data = charts.chart_data(FAILING_STATS)
    for (name, title, key) in charts.CHARTS:
        figure = charts.bar_figure(title, data[key])
        assert len(figure.axes[0].patches) == expected[name], name
        assert imread(io.BytesIO(pngs[name]), format="png").ndim == 3
    assert [value for _, value in data["labels"]] == [4, 1, 1], "stored images, sorted"


def test_failures_by_reason_and_host_and_derived_rows_in_the_card() -> None:
    card = render_card(FAILING_STATS, {"label_field": "speciesKey"}, [])
    assert _table(_section(card, "### Failures")) == {"FAILED_HTTP": [3], "FAILED_TIMEOUT": [1]}
    assert "| a.example.org | 3 |" in card
    assert "install `beam-gbif[report]`" in card, "without charts the card says how to get them"
    assert derived_dataset_csv(FAILING_STATS) == "datasetKey,count\nd1,4\nd2,2\n"


def test_many_labels_show_the_top_50_and_the_rest_summed() -> None:
    stats = {"by_label": {f"l{i:03d}": 1000 - i for i in range(80)}}
    rows = count_rows(stats, by_split=False, top=TOP_LABELS)
    assert len(rows) == TOP_LABELS + 1 and rows[0][0] == "l000"
    assert rows[-1] == ["30 more labels", sum(1000 - i for i in range(50, 80)), 0, 0]


def test_a_dwca_source_is_cited_by_its_doi() -> None:
    stats = {**FAILING_STATS, "gbif_downloads": [{"download": "10.15468/dl.abc", "doi_url": "https://doi.org/10.15468/dl.abc"}]}
    citation = _section(render_card(stats, {}, []), "## How to cite")
    assert "https://doi.org/10.15468/dl.abc" in citation and "derived dataset" not in citation


def test_licence_codes_map_to_hugging_face_identifiers() -> None:
    assert [hf_license(c) for c in ("CC0_1_0", "CC_BY_4_0", "CC_BY_NC_SA_3_0", "CC_BY_NC_ND_4_0", "UNKNOWN", "PUBLIC_DOMAIN")] == [
        "cc0-1.0", "cc-by-4.0", "cc-by-nc-sa-3.0", "cc-by-nc-nd-4.0", "other", "other"]


def test_the_job_writes_the_card_itself_as_a_step(tmp_path: Path) -> None:
    import apache_beam as beam

    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        _ = pipeline | beam.Create([FAILING_STATS]) | WriteCard(str(tmp_path), {"label_field": "speciesKey"})
    assert "# GBIF media by speciesKey" in (tmp_path / "README.md").read_text()
    assert (tmp_path / "chart_failure_hosts.png").exists()
    # A rerun without failures removes the failure charts instead of leaving stale pictures beside the card.
    write_card(str(tmp_path), {**FAILING_STATS, "failed": 0, "failed_by_host": {}, "by_status": {"DOWNLOADED": 6}}, {})
    assert not (tmp_path / "chart_failure_hosts.png").exists() and not (tmp_path / "chart_failures.png").exists()


def test_without_matplotlib_the_card_has_tables_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(charts, "have_matplotlib", lambda: False)
    written = write_card(str(tmp_path), FAILING_STATS, {})
    assert not list(tmp_path.glob("*.png")) and "README.md" in written
    assert "install `beam-gbif[report]`" in (tmp_path / "README.md").read_text()
