"""The dataset card (``OUTPUT/README.md``) as text, from stats.json and the facts of the run: pure, no I/O.

Front matter in the Hugging Face dataset-card YAML format, so the folder can be published there
as it is; then what the dataset is, how it was made, what it holds, its licences, how to cite
it (a download DOI, or GBIF's derived datasets for API searches) and how to load it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

CARD_FILE = "README.md"
DERIVED_DATASET_FILE = "derived_dataset.csv"
DERIVED_DATASET_HEADER = ("datasetKey", "count")
TOP_LABELS = 50
DERIVED_DATASETS_URL = "https://www.gbif.org/derived-dataset/about"
_CC = re.compile(r"^(CC0|CC_BY(?:_NC)?(?:_SA|_ND)?)_(\d)_(\d)$")
# Hugging Face's size_categories, by number of files.
_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"),
          (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))


def hf_license(code: str) -> str:
    """A normalised licence code (CC_BY_NC_4_0) as Hugging Face's identifier (cc-by-nc-4.0); ``other`` when it has none."""
    match = _CC.match(code)
    if not match:
        return "other"
    return f"{match.group(1).lower().replace('_', '-')}-{match.group(2)}.{match.group(3)}"


def size_category(files: int) -> str:
    for bound, name in _SIZES:
        if files < bound:
            return name
    return "n>1T"


def stored_by_dataset(stats: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(GBIF datasetKey, files in the dataset) rows, largest first; files without a datasetKey (URL lists) are left out."""
    counts = stats.get("files_by_dataset", {})
    return sorted(((key, count) for key, count in counts.items() if key), key=lambda row: (-row[1], row[0]))


def derived_dataset_csv(stats: Mapping[str, Any]) -> str:
    """``datasetKey,count``: the table GBIF's derived-dataset registration and rgbif's ``derived_dataset()`` take."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(DERIVED_DATASET_HEADER)
    writer.writerows(stored_by_dataset(stats))
    return buffer.getvalue()


def _cell(value: Any) -> str:
    # A label or a host comes from GBIF data: a "|" or a line break would break the table.
    return str(value).replace("|", "\\|").replace("\n", " ").replace("\r", " ") or "(none)"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; numbers right-aligned."""
    align = ["---:" if rows and isinstance(rows[0][i], (int, float)) else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _sum_nested(nested: Mapping[str, Mapping[str, int]], by_split: bool) -> dict[str, int]:
    totals: dict[str, int] = {}
    for split, labels in nested.items():
        for label, count in labels.items():
            key = split if by_split else label
            totals[key] = totals.get(key, 0) + count
    return totals


def count_rows(stats: Mapping[str, Any], by_split: bool, top: int | None = None) -> list[list[Any]]:
    """[name, records, stored, failed] per split (or label), most records first; past ``top``, one row sums the rest."""
    records = stats.get("by_split" if by_split else "by_label", {})
    stored = _sum_nested(stats.get("files_by_split_label", {}), by_split)
    failed = _sum_nested(stats.get("failed_by_split_label", {}), by_split)
    rows = [[name, count, stored.get(name, 0), failed.get(name, 0)] for name, count in records.items()]
    rows.sort(key=lambda row: (-row[1], str(row[0])))
    if top is not None and len(rows) > top:
        rest = rows[top:]
        rows = rows[:top] + [[f"{len(rest)} more labels", *(sum(row[i] for row in rest) for i in (1, 2, 3))]]
    return rows


def _front_matter(stats: Mapping[str, Any], facts: Mapping[str, Any]) -> str:
    licences = sorted({hf_license(code) for code in stats.get("by_license", {})}) or ["other"]
    lines = ["---", f"pretty_name: {json.dumps(pretty_name(stats, facts))}",
             "license:" + (f" {licences[0]}" if len(licences) == 1 else "".join(f"\n- {name}" for name in licences))]
    lines += ["size_categories:", f"- {size_category(int(stats.get('files', 0)))}", "task_categories:", "- image-classification",
              "tags:", "- gbif", "- biodiversity", "---"]
    return "\n".join(lines)


def pretty_name(stats: Mapping[str, Any], facts: Mapping[str, Any]) -> str:
    labels = len(stats.get("by_label", {}))
    return f"GBIF media by {facts.get('label_field') or 'label'}: {stats.get('files', 0)} files, {labels} labels"


def _how_made(facts: Mapping[str, Any]) -> str:
    options = facts.get("options", {})
    rows = [[f"--{name}", json.dumps(value) if isinstance(value, (dict, list)) else value] for name, value in sorted(options.items())]
    parts = [
        "## How it was made", "",
        f"Made by beam-gbif {facts.get('version', '?')} on {facts.get('created', '?')} from {facts.get('source', '?')}, "
        f"seed {facts.get('seed', 0)}. The same command with the same seed selects the same records.", "",
        "```sh", str(facts.get("command", "beam-gbif")), "```",
    ]
    if rows:
        parts += ["", table(["option", "value"], rows)]
    return "\n".join(parts)


def _charts(charts: Sequence[tuple[str, str]]) -> str:
    if not charts:
        return ("Charts: install `beam-gbif[report]` (matplotlib) and run again (or `beam-gbif inspect OUTPUT` for the "
                "figures as text).")
    return "\n\n".join(f"![{title}]({name})" for name, title in charts)


def _contents(stats: Mapping[str, Any], charts: Sequence[tuple[str, str]]) -> str:
    header = ["records", "stored", "failed"]
    parts = ["## What it contains", "",
             f"{stats.get('files', 0)} files ({stats.get('bytes', 0)} bytes) from {stats.get('records', 0)} selected records; "
             f"{stats.get('failed', 0)} could not be downloaded. Files are at `split/label/sha1(url).ext`; every record, "
             "stored or not, is a row of `manifest/*.avro`.", "", _charts(charts), "",
             "### Per split", "", table(["split", *header], count_rows(stats, by_split=True)), "",
             f"### Per label (top {TOP_LABELS})", "", table(["label", *header], count_rows(stats, by_split=False, top=TOP_LABELS))]
    streams = stats.get("streams", [])
    if streams:
        rows = [[row["stream"], row["available"], row["quota"], row["stored"]] for row in streams]
        parts += ["", "### Per stream", "", "The quota is the plan (what sampling asked of each stream); stored is what is in the dataset.",
                  "", table(["stream", "available", "quota", "stored"], rows)]
    failures = {status: n for status, n in stats.get("by_status", {}).items() if status.startswith("FAILED")}
    if failures:
        parts += ["", "### Failures", "", table(["reason", "records"], sorted(failures.items(), key=lambda kv: -kv[1])), "",
                  table(["host", "failed"], sorted(stats.get("failed_by_host", {}).items(), key=lambda kv: -kv[1])[:TOP_LABELS])]
    return "\n".join(parts)


def _licences(stats: Mapping[str, Any]) -> str:
    rows = sorted(stats.get("by_license", {}).items(), key=lambda kv: (-kv[1], kv[0]))
    return "\n".join([
        "## Licences", "",
        "Each image keeps its own licence, set by its rights holder (counts per normalised licence, over every selected record):", "",
        table(["licence", "records"], rows), "",
        "Attribution: whoever shows or redistributes an image credits it as `ATTRIBUTION.csv` says for that file (creator, "
        "rights holder, licence, the GBIF occurrence page). Licences with NC allow no commercial use; ND allows no "
        "modified copies; UNKNOWN and ALL_RIGHTS_RESERVED need the rights holder's permission.",
    ])


def _citation(stats: Mapping[str, Any]) -> str:
    parts = ["## How to cite", ""]
    for download in stats.get("gbif_downloads", []):
        parts.append(f"- {download.get('citation') or download.get('doi_url') or download['download']}")
    datasets = stored_by_dataset(stats)
    if datasets and not stats.get("gbif_downloads"):
        parts += [
            "GBIF asks users of its data to cite it with a DOI. This dataset was built from API searches, which have no "
            "download DOI: register a **derived dataset** at GBIF and cite the DOI it gives.", "",
            f"1. `{DERIVED_DATASET_FILE}` lists the {len(datasets)} GBIF datasets used with the number of files from each "
            "(header `datasetKey,count`).",
            f"2. Upload it at {DERIVED_DATASETS_URL} (or with rgbif: "
            f"`derived_dataset(citation_data = read.csv(\"{DERIVED_DATASET_FILE}\"), title = ..., source_url = ...)`).",
            "3. Cite the DOI GBIF returns, and add it here.",
        ]
    elif not datasets and not stats.get("gbif_downloads"):
        parts.append("No GBIF dataset keys are known for these files (a URL list): cite the sources the list came from.")
    return "\n".join(parts)


def _loading(stats: Mapping[str, Any], facts: Mapping[str, Any]) -> str:
    split = next(iter(sorted(stats.get("by_split", {}), key=lambda s: s != "train")), "")
    folder = f"OUTPUT/{split}" if split else "OUTPUT"
    parts = ["## How to load", "", "`OUTPUT` is this folder.", "", "```python",
             "from torchvision.datasets import ImageFolder", f'train = ImageFolder("{folder}")', "",
             "import tensorflow as tf", f'train = tf.keras.utils.image_dataset_from_directory("{folder}")', "",
             "from datasets import load_dataset", 'dataset = load_dataset("imagefolder", data_dir="OUTPUT")', "```"]
    for name in facts.get("formats", []):
        parts.append(f"- also written as `{name}` (see its folder under OUTPUT)")
    return "\n".join(parts)


def render_card(stats: Mapping[str, Any], facts: Mapping[str, Any], charts: Sequence[tuple[str, str]] = ()) -> str:
    """The card's Markdown. ``facts``: the run (command, options, version, created, source, seed, label_field);
    ``charts``: (file name beside the card, title) of the PNG charts written with it."""
    intro = (f"# {pretty_name(stats, facts)}\n\nImages of GBIF occurrence media labelled by `{facts.get('label_field') or 'label'}`, "
             "for image classification, selected and downloaded by [beam-gbif](https://github.com/beam-gbif/beam-gbif).")
    sections = [_front_matter(stats, facts), intro, _how_made(facts), _contents(stats, charts), _licences(stats), _citation(stats),
                _loading(stats, facts)]
    return "\n\n".join(sections) + "\n"
