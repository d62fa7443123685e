"""stats.json: counts of the download results, computed in the pipeline (so Dataflow writes it too).

``ComputeStats`` combines the results into one dict and writes ``<output>/stats.json``. After a
local run, ``finalize_stats`` adds what only the launcher knows (Beam metric counters such as
drops and duplicates, wall time), and ``format_summary`` renders the printed summary.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_gbif import METRICS_NAMESPACE
from beam_gbif.core.records import IN_DATASET, MediaRecord, Status
from beam_gbif.io.store import join_uri, write_whole

STATS_FILE = "stats.json"
# records: manifest rows, kept_from_earlier_run included (files not selected by this run, still in the dataset).
# bytes_fetched: bodies fetched by this run (originals, before resizing); bytes_stored: the files this run wrote.
_TOTALS = ("records", "files", "failed", "filtered", "kept_from_earlier_run", "bytes", "bytes_downloaded", "bytes_fetched",
           "bytes_stored")
_BREAKDOWNS = ("by_status", "by_split", "by_label", "by_license", "by_source")
# Files in the dataset per GBIF dataset (the derived-dataset citation) and per stream; failures per media host.
_MORE_BREAKDOWNS = ("files_by_dataset", "files_by_stream", "failed_by_host")
_NESTED = ("files_by_split_label", "failed_by_split_label")


def stats_path(output: str) -> str:
    return join_uri(output, STATS_FILE)


class StatsCombineFn(beam.CombineFn):
    """Mergeable counts over MediaRecords; the accumulator is a Counter keyed by (breakdown, value)."""

    def create_accumulator(self) -> Counter:
        return Counter()

    def add_input(self, accumulator: Counter, record: MediaRecord) -> Counter:
        accumulator["records"] += 1
        accumulator[("by_status", record.status or "NOT_DOWNLOADED")] += 1
        accumulator[("by_split", record.split)] += 1
        accumulator[("by_label", record.label)] += 1
        accumulator[("by_license", record.license_code)] += 1
        accumulator[("by_source", record.source)] += 1
        if record.status in IN_DATASET:
            accumulator["files"] += 1
            accumulator["bytes"] += record.bytes
            accumulator[("files_by_split_label", record.split, record.label)] += 1
            accumulator[("files_by_dataset", record.dataset_key)] += 1
            accumulator[("files_by_stream", "/".join(record.stream))] += 1
        if record.status == Status.DOWNLOADED:
            accumulator["bytes_downloaded"] += record.bytes
            accumulator["bytes_stored"] += record.bytes
        accumulator["bytes_fetched"] += record.original_bytes
        if record.status.startswith("FILTERED"):
            accumulator["filtered"] += 1
        if record.status == Status.KEPT_FROM_EARLIER_RUN:
            accumulator["kept_from_earlier_run"] += 1
        if Status.is_failure(record.status):
            accumulator["failed"] += 1
            accumulator[("failed_by_split_label", record.split, record.label)] += 1
            accumulator[("failed_by_host", urlsplit(record.url).hostname or "(no host)")] += 1
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[Counter]) -> Counter:
        merged: Counter = Counter()
        for accumulator in accumulators:
            merged.update(accumulator)
        return merged

    def extract_output(self, accumulator: Counter) -> dict[str, Any]:
        stats: dict[str, Any] = {name: accumulator.get(name, 0) for name in _TOTALS}
        for breakdown in (*_BREAKDOWNS, *_MORE_BREAKDOWNS, *_NESTED):
            stats[breakdown] = {}
        for key, count in sorted(accumulator.items(), key=lambda item: str(item[0])):
            if not isinstance(key, tuple):
                continue
            if key[0] in _NESTED:
                stats[key[0]].setdefault(key[1], {})[key[2]] = count
            else:
                stats[key[0]][key[1]] = count
        stats["gbif_downloads"] = gbif_downloads(stats["by_source"])
        return stats


def gbif_downloads(by_source: Mapping[str, int]) -> list[dict[str, str]]:
    """The GBIF downloads (DwC-A sources) the dataset came from, with their DOI link to cite."""
    downloads = []
    for source in sorted(by_source):
        if not source.startswith("dwca:"):
            continue
        reference = source[len("dwca:"):]
        entry = {"download": reference}
        if reference.startswith("10."):
            entry["doi_url"] = f"https://doi.org/{reference}"
        downloads.append(entry)
    return downloads


def write_json(path: str, value: Mapping[str, Any]) -> None:
    """Whole or not at all (io/store.py's one rule)."""
    write_whole(path, (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"),
            content_type="application/json")


def read_json(path: str) -> dict[str, Any]:
    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode("utf-8"))


def add_citations(stats: dict[str, Any], citations: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merges what is known about each GBIF download (DOI, GBIF's citation line, ...) into ``gbif_downloads``."""
    by_source = {citation.get("source", ""): citation for citation in citations}
    stats["gbif_downloads"] = [
        {**entry, **{k: v for k, v in by_source.get(f"dwca:{entry['download']}", {}).items() if v not in (None, "")}}
        for entry in stats.get("gbif_downloads", [])
    ]
    return stats


class _WriteStats(beam.DoFn):
    def __init__(self, output: str, run_id: str, citations: tuple[dict[str, Any], ...]):
        self._output = output
        self._run_id = run_id
        self._citations = citations

    def process(self, stats: dict[str, Any], cited: Iterable[Mapping[str, Any]] = (),
                streams: Iterable[Mapping[str, Any]] = ()) -> Iterable[dict[str, Any]]:
        stats = add_citations(dict(stats, output=self._output, run_id=self._run_id), (*self._citations, *cited))
        if streams:
            stats["streams"] = stream_rows(streams, stats.get("files_by_stream", {}))
        write_json(stats_path(self._output), stats)
        yield stats


def stream_rows(streams: Iterable[Mapping[str, Any]], stored: Mapping[str, int]) -> list[dict[str, Any]]:
    """The sampler's per-stream rows (quota as planned, records selected) with the files stored of each."""
    rows = []
    for row in streams:
        name = "/".join(str(part) for part in row.get("stream", []))
        rows.append({"stream": name, "available": row.get("available", 0), "quota": row.get("quota", 0),
                     "selected": row.get("selected", 0), "stored": stored.get(name, 0)})
    return sorted(rows, key=lambda row: row["stream"])


class ComputeStats(beam.PTransform):
    """Results → one stats dict, written to ``<output>/stats.json`` and emitted.

    ``citations``: per GBIF download read (``source``, ``doi``, ``citation``, ...), known when the
    pipeline is built; ``cited``: a PCollection of more of them, known only once the pipeline has
    read its source (the DwC-A source's). They join the matching ``gbif_downloads`` entries.
    """

    def __init__(self, output: str, run_id: str = "", citations: Iterable[Mapping[str, Any]] = (), cited: beam.PCollection | None = None,
                 streams: beam.PCollection | None = None):
        """``streams``: the sampler's per-stream rows (SampleStreams.stream_stats), for stats.json's ``streams``."""
        super().__init__()
        self._output = output
        self._run_id = run_id
        self._citations = tuple(dict(c) for c in citations)
        self._cited = cited
        self._streams = streams

    def expand(self, results: beam.PCollection) -> beam.PCollection:
        named = (("cited", self._cited), ("streams", self._streams))
        side = {name: beam.pvalue.AsList(pcoll) for name, pcoll in named if pcoll is not None}
        return (
            results
            | "Count" >> beam.CombineGlobally(StatsCombineFn())
            | "WriteStatsJson" >> beam.ParDo(_WriteStats(self._output, self._run_id, self._citations), **side)
        )


def metric_counters(result: Any, namespace: str = METRICS_NAMESPACE) -> dict[str, int]:
    """The Beam counters of a finished run, summed over steps, by name (for ``finalize_stats``'s ``extra``)."""
    from apache_beam.metrics.metric import MetricsFilter

    counters: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + int(value or 0)
    return dict(sorted(counters.items()))


def finalize_stats(output: str, extra: Mapping[str, Any], seconds: float, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merges launcher-side figures into stats.json and returns the result.

    ``extra``: Beam metric counters (drops, duplicates, shortfalls), stored under ``counters``.
    ``details``: optional top-level entries (e.g. a DwC-A download's ``citation``).
    """
    path = stats_path(output)
    if not FileSystems.exists(path):
        raise FileNotFoundError(f"{path} does not exist: the pipeline did not reach WriteManifest")
    stats = read_json(path)
    stats["counters"] = {**stats.get("counters", {}), **dict(extra)}
    stats["seconds"] = round(float(seconds), 3)
    stats.update(details or {})
    write_json(path, stats)
    return stats


def _human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _counts_line(counts: Mapping[str, int], limit: int = 12) -> str:
    if not counts:
        return "-"
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{name or '(none)'} {count}" for name, count in ordered[:limit])
    return shown + (f", ... {len(ordered) - limit} more" if len(ordered) > limit else "")


def format_summary(stats: Mapping[str, Any]) -> str:
    """The printed summary of a run: counts by status, split, label, licence; bytes; time; where."""
    output = str(stats.get("output", "")).rstrip("/")
    seconds = stats.get("seconds")
    timing = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    records, files, failed = stats.get("records", 0), stats.get("files", 0), stats.get("failed", 0)
    kept, filtered = stats.get("kept_from_earlier_run", 0), stats.get("filtered", 0)
    bytes_now, bytes_total = _human_bytes(stats.get("bytes_downloaded", 0)), _human_bytes(stats.get("bytes", 0))
    also_kept = f" + {kept} kept from earlier runs" if kept else ""
    lines = [
        f"beam-gbif: {records - kept} records{also_kept}{timing}: {files} files in the dataset, {failed} failed"
        + (f", {filtered} filtered" if filtered else ""),
        f"  status:   {_counts_line(stats.get('by_status', {}))}",
        f"  split:    {_counts_line(stats.get('by_split', {}))}",
        f"  label:    {_counts_line(stats.get('by_label', {}))}",
        f"  licence:  {_counts_line(stats.get('by_license', {}))}",
        f"  bytes:    {bytes_total} in the dataset, {bytes_now} downloaded now (fetched "
        f"{_human_bytes(stats.get('bytes_fetched', 0))}, stored {_human_bytes(stats.get('bytes_stored', 0))})",
    ]
    counters = {name: value for name, value in stats.get("counters", {}).items() if value}
    if counters:
        lines.append(f"  counters: {_counts_line(counters, limit=20)}")
    for download in stats.get("gbif_downloads", []):
        lines.append(f"  cite:     {download.get('citation') or download.get('doi_url') or download['download']}")
    if output:
        lines.append(f"  dataset:  {output}/  (README.md: the dataset card; manifest/*.avro, ATTRIBUTION.csv, stats.json)")
    return "\n".join(lines)
