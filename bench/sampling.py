"""Benchmark: synthetic MediaRecords through SampleStreams on the local FnApiRunner.

    python3 bench/sampling.py                          # 5,000,000 records, 1,000 streams, --nb_samples 100000
    python3 bench/sampling.py --records 1000000 --one_media --media_per_occurrence 2

Records are generated inside the pipeline from chunk numbers (never held by the driver).
Prints records/s, peak RSS of this process (the FnApiRunner runs in it) and whether every
stream got exactly its quota. The API read planner has its own benchmark (bench/planning.py).

By default SampleStreams runs without its one_media_per_occurrence step, as in the pipeline
(the GBIF sources keep one media per occurrence as they read). ``--one_media`` adds that
step: a shuffle with one element per occurrence, which the FnApiRunner holds in memory
(~1.2 KB per occurrence measured), so 5,000,000 occurrences would need ~6 GB. The
sampling itself is one bounded pass for a balanced --nb_samples and holds O(nb_samples).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from beam_gbif.testing.gcs_emulator import NO_METADATA_ENV  # noqa: E402  (stdlib only: safe before the env is set)

os.environ.update(NO_METADATA_ENV)

import apache_beam as beam  # noqa: E402
from apache_beam.metrics.metric import MetricsFilter  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from beam_gbif import METRICS_NAMESPACE  # noqa: E402
from beam_gbif.core.records import MediaRecord  # noqa: E402
from beam_gbif.transforms.sampling import RECORDS_AVAILABLE, RECORDS_SELECTED, SHORT_STREAMS, SampleStreams, SamplingSettings  # noqa: E402

CHUNK = 10_000


def synthetic_records(chunk: int, total: int, streams: int, media_per_occurrence: int) -> Iterator[MediaRecord]:
    """Records ``chunk*CHUNK ..`` of ``total``; record i belongs to stream i % streams."""
    for index in range(chunk * CHUNK, min(total, (chunk + 1) * CHUNK)):
        occurrence = index // media_per_occurrence
        stream = str(occurrence % streams)
        yield MediaRecord(
            url=f"https://media.example.org/{stream}/{occurrence}/{index}.jpg",
            label=stream,
            occurrence_key=occurrence,
            stream=(stream,),
            license_code="CC_BY_4_0",
        )


def peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0  # ru_maxrss is KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=5_000_000)
    parser.add_argument("--streams", type=int, default=1_000)
    parser.add_argument("--nb_samples", type=int, default=100_000)
    parser.add_argument("--media_per_occurrence", type=int, default=1)
    parser.add_argument("--one_media", action="store_true", help="include the one-media-per-occurrence step (a full shuffle)")
    parser.add_argument("--seed", type=int, default=0)
    args, beam_args = parser.parse_known_args()

    options = PipelineOptions(["--runner=FnApiRunner", *beam_args])
    started = time.monotonic()
    pipeline = beam.Pipeline(options=options)
    chunks = range((args.records + CHUNK - 1) // CHUNK)
    generate = beam.FlatMap(synthetic_records, args.records, args.streams, args.media_per_occurrence).with_output_types(MediaRecord)
    sampler = SampleStreams(SamplingSettings(nb_samples=args.nb_samples, one_media_per_occurrence=args.one_media, seed=args.seed))
    (
        pipeline
        | "Chunks" >> beam.Create(list(chunks))
        | "Generate" >> generate
        | "SampleStreams" >> sampler
    )
    exact = (
        sampler.stream_stats
        | "ExactlyItsQuota" >> beam.Map(lambda row: row["selected"] == row["quota"])
        | "AllExact" >> beam.combiners.ToList()
        | "Check" >> beam.Map(lambda flags: all(flags) and len(flags) > 0)
    )
    _ = exact | "Report" >> beam.Map(lambda ok: print(f"every stream selected exactly its quota: {ok}"))
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.monotonic() - started

    counters = {
        item.key.metric.name: item.committed
        for item in result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
    }
    print(f"records in:        {args.records:,} in {args.streams:,} streams, {args.media_per_occurrence} media per occurrence")
    print(f"mode:              nb_samples={args.nb_samples}, one_media_per_occurrence={args.one_media}, seed={args.seed}")
    print(f"available/selected: {counters.get(RECORDS_AVAILABLE, 0):,} / {counters.get(RECORDS_SELECTED, 0):,}; "
          f"short streams: {counters.get(SHORT_STREAMS, 0)}")
    print(f"wall time:         {seconds:.1f} s  ({args.records / seconds:,.0f} records/s, pipeline construction and start included)")
    print(f"peak RSS:          {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
