"""Benchmark: a GBIF-shaped Darwin Core Archive to the sampled record set, beam-gbif vs python-dwca-reader.

    python bench/dwca.py                       # 2,000,000 occurrences / 3,000,000 media, and a 10x smaller archive
    python bench/dwca.py --occurrences 200000 --media 300000 --sizes 1
    python bench/dwca.py --multi_processing    # also the 2-worker runner

For each archive size it runs, each in its own process so peak RSS is that run's alone:
  * beam-gbif: ReadDwcaMedia (extract into a fresh cache, parallel text reads, join by gbifID
    through the on-disk shuffle of local runs) -> FilterMedia -> SampleStreams (500 per stream,
    streams = datasetKey), on the FnApiRunner;
  * python-dwca-reader: DwCAReader iterating core rows with their extensions in one process and
    building (url, label) for every StillImage, as gbif-dl's dwca.generate_urls does.
python-dwca-reader is installed into a venv under /tmp when it is not importable.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from beam_gbif.transforms.sources.dwca import prepare
from pipelines import stages

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(tempfile.gettempdir()) / "beam-gbif-bench-dwca-venv"


def _peak_rss_mb() -> dict[str, float]:
    # ru_maxrss is in KiB on Linux. Children: the largest of the waited-for worker processes.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": round(own, 1), "peak_rss_children_mb": round(children, 1)}


def _count_sampled(record: object) -> None:
    from apache_beam.metrics import Metrics

    Metrics.counter("bench", "sampled").inc()


SAMPLING_ARGS = {
    "cap": ["--nb_samples_per_stream=500"],  # one pass, a per-stream combiner
    "weighted": ["--nb_samples=10000", "--weighted_streams"],  # two passes: count every stream, then select
}


def child_beam(archive: str, cache: str, multi_processing: bool, source_only: bool = False, sampling: str = "cap") -> dict:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_gbif.transforms.stats import metric_counters
    from pipelines.options import GbifMediaOptions, normalize_argv

    argv = ["--runner=FnApiRunner", f"--dwca={archive}", f"--dwca_root_path={cache}", "--label=speciesKey",
            "--split_streams_by=datasetKey", *SAMPLING_ARGS[sampling], "--seed=1", "--output=/tmp/unused"]
    if multi_processing:
        argv += ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    options = PipelineOptions(normalize_argv(argv))
    gbif = options.view_as(GbifMediaOptions)
    started = time.monotonic()
    source = stages.read_dwca_media(gbif)
    prepare(source.settings)  # resolve + extract (memoised: the pipeline's own step then reuses it), timed separately too
    prepared_at = time.monotonic()
    pipeline = beam.Pipeline(options=options)
    sampled = pipeline | "ReadMedia" >> source
    if not source_only:
        sampled = sampled | "FilterMedia" >> stages.filter_media(gbif) | "SampleStreams" >> stages.sample_streams(gbif)
    _ = sampled | "CountSampled" >> beam.Map(_count_sampled)
    result = pipeline.run()
    result.wait_until_finish()
    finished = time.monotonic()
    counters = {**metric_counters(result), **metric_counters(result, namespace="bench")}
    return {"seconds": round(finished - started, 1), "extract_seconds": round(prepared_at - started, 1),
            "sampled": counters.get("sampled", 0), "counters": counters, **_peak_rss_mb()}


def child_reader(archive: str) -> dict:
    # This script is itself called dwca.py: its folder must not shadow the dwca package.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    from dwca.read import DwCAReader

    gbif = "http://rs.gbif.org/terms/1.0/"
    dc_type, dc_identifier = "http://purl.org/dc/terms/type", "http://purl.org/dc/terms/identifier"
    started = time.monotonic()
    records = 0
    labels = set()
    with DwCAReader(archive) as dwca:
        for row in dwca:
            label = row.data.get(gbif + "speciesKey", "")
            for extension in row.extensions:
                data = extension.data
                if extension.rowtype == gbif + "Multimedia" and data.get(dc_type) == "StillImage" and data.get(dc_identifier):
                    records += 1
                    labels.add(label)
    return {"seconds": round(time.monotonic() - started, 1), "records": records, "labels": len(labels), **_peak_rss_mb()}


def reader_python() -> str:
    """A python that can import dwca (python-dwca-reader): this one, or a venv under /tmp."""
    probe = subprocess.run([sys.executable, "-c", "import dwca.read"], capture_output=True)
    if probe.returncode == 0:
        return sys.executable
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if subprocess.run([str(python), "-c", "import dwca.read"], capture_output=True).returncode != 0:
        print(f"installing python-dwca-reader into {VENV} ...", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "python-dwca-reader"], check=True)
    return str(python)


def _available_mb() -> float:
    with open("/proc/meminfo") as meminfo:
        fields = dict(line.split(":", 1) for line in meminfo)
    return int(fields["MemAvailable"].split()[0]) / 1024


# The join and the URL de-duplication spill to disk on local runners (beam_gbif.transforms.spill), so a run
# needs about the same memory at any archive size: measured ~260 MB in-process, ~300 MB per worker.
NEEDED_MB = 600


def _enough_memory() -> bool:
    return NEEDED_MB < 0.7 * _available_mb()


def _run_child(python: str, args: list[str]) -> dict:
    from beam_gbif.testing.gcs_emulator import NO_METADATA_ENV  # nothing a child runs may probe the GCE metadata server

    env = {**os.environ, **NO_METADATA_ENV, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([python, __file__, *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"child {args[:2]} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--occurrences", type=int, default=2_000_000)
    parser.add_argument("--media", type=int, default=3_000_000)
    parser.add_argument("--sizes", type=int, default=2, help="1: only the full size; 2: also a --small_factor smaller archive first")
    parser.add_argument("--small_factor", type=int, default=10)
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "beam-gbif-bench-dwca"))
    parser.add_argument("--multi_processing", action="store_true", help="also run beam-gbif with 2 worker processes")
    parser.add_argument("--multi_processing_max_occurrences", type=int, default=2_000_000,
                        help="skip the 2-worker run (and the --source_only run) above this many occurrences")
    parser.add_argument("--skip_reader", action="store_true")
    parser.add_argument("--source_only", action="store_true",
                        help="also time ReadDwcaMedia alone (no filter/sampling) at sizes up to --multi_processing_max_occurrences")
    parser.add_argument("--sampling", choices=sorted(SAMPLING_ARGS), default="cap",
                        help="cap: 500 per stream (one pass); weighted: 10,000 in proportion to stream sizes (count, then select)")
    parser.add_argument("--child", choices=["beam", "reader"], help=argparse.SUPPRESS)
    parser.add_argument("--archive", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "beam":
        print(json.dumps(child_beam(args.archive, args.cache, args.multi_processing, args.source_only, args.sampling)))
        return
    if args.child == "reader":
        print(json.dumps(child_reader(args.archive)))
        return

    sys.path.insert(0, str(ROOT))
    from beam_gbif.testing.synthetic_dwca import write_synthetic_dwca

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sizes = [(args.occurrences, args.media)]
    if args.sizes == 2:
        sizes.insert(0, (args.occurrences // args.small_factor, args.media // args.small_factor))
    reader = None if args.skip_reader else reader_python()
    rows = []
    for occurrences, media in sizes:
        archive = workdir / f"synthetic-{occurrences}-{media}.zip"
        started = time.monotonic()
        summary = write_synthetic_dwca(archive, occurrences=occurrences, media=media, seed=1)
        print(f"archive {archive.name}: {summary.bytes / 1e6:.0f} MB zip, {summary.still_images_with_url} StillImage rows "
              f"(written in {time.monotonic() - started:.0f} s)", flush=True)
        runs = [("beam-gbif FnApiRunner in-process", ["--child", "beam"])]
        if not _enough_memory():
            print(f"  skipping beam-gbif at {occurrences:,} occurrences: about {NEEDED_MB:,.0f} MB needed, "
                  f"{_available_mb():,.0f} MB available", flush=True)
            runs = []
        if runs and args.source_only and occurrences <= args.multi_processing_max_occurrences:
            runs.append(("beam-gbif ReadDwcaMedia alone (all records, no sampling)", ["--child", "beam", "--source_only"]))
        if args.multi_processing and occurrences <= args.multi_processing_max_occurrences:
            runs.append(("beam-gbif FnApiRunner 2 worker processes", ["--child", "beam", "--multi_processing"]))
        for name, child_args in runs:
            with tempfile.TemporaryDirectory(dir=workdir) as cache:
                result = _run_child(sys.executable, [*child_args, "--sampling", args.sampling, "--archive", str(archive), "--cache", cache])
            rows.append((occurrences, media, name, summary.still_images_with_url, result))
            print(f"  {name}: {json.dumps(result)}", flush=True)
        if reader:
            result = _run_child(reader, ["--child", "reader", "--archive", str(archive)])
            assert result["records"] == summary.still_images_with_url, (result, summary)
            rows.append((occurrences, media, "python-dwca-reader (gbif-dl's way)", summary.still_images_with_url, result))
            print(f"  python-dwca-reader: {json.dumps(result)}", flush=True)
        archive.unlink()

    print()
    print("| occurrences | media rows | reader | StillImage records | seconds (extract) | records/s | sampled | peak RSS MB (workers) |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for occurrences, media, name, images, result in rows:
        extract = f" ({result['extract_seconds']})" if "extract_seconds" in result else ""
        workers = f" ({result['peak_rss_children_mb']:.0f})" if "multi" in name or "2 worker" in name else ""
        print(f"| {occurrences:,} | {media:,} | {name} | {images:,} | {result['seconds']}{extract} | "
              f"{images / max(result['seconds'], 1e-9):,.0f} | {result.get('sampled', '-')} | {result['peak_rss_mb']:.0f}{workers} |")


if __name__ == "__main__":
    main()
