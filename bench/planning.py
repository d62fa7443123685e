"""Benchmark of the API read planner (issue #3): search requests made vs the minimum possible.

    python bench/planning.py                       # 10 streams × 50,000 occurrences, --nb_samples 1000
    python bench/planning.py --streams 20 --per_stream 200000 --nb_samples 5000

Runs ReadOccurrenceMedia → FilterMedia → SampleStreams on the FnApiRunner against the fake
GBIF API (127.0.0.1 only) and prints: planning calls, pages read, the minimum (one 300-record
page per 300 records of each stream's quota, each stream filtered separately), what reading
every page would cost, records selected per stream, and wall time.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from beam_gbif.testing.gcs_emulator import NO_METADATA_ENV  # noqa: E402  (stdlib only: safe before the env is set)

os.environ.update(NO_METADATA_ENV)

import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from beam_gbif.testing.fake_gbif import FakeGbifApi  # noqa: E402
from beam_gbif.testing.synthetic import SyntheticOccurrences  # noqa: E402
from beam_gbif.transforms.filtering import FilterMedia  # noqa: E402
from beam_gbif.transforms.sampling import (
    SampleStreams,  # noqa: E402
    SamplingSettings,
)
from beam_gbif.transforms.sources.occurrence_api import (
    ApiReadSettings,
    ReadOccurrenceMedia,  # noqa: E402
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--per_stream", type=int, default=50_000)
    parser.add_argument("--nb_samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    species = list(range(1000, 1000 + args.streams))
    started = time.monotonic()
    occurrences = SyntheticOccurrences(species, ["bench-dataset"], per_stream=args.per_stream, media_base_url="http://127.0.0.1:9",
                                       seed=args.seed)
    with FakeGbifApi(occurrences) as api:
        built = time.monotonic()
        source = ReadOccurrenceMedia(ApiReadSettings({"speciesKey": species}, api_url=api.base_url, stream_fields=["speciesKey"],
                                     nb_samples=args.nb_samples, seed=args.seed))
        plan = source.plan()
        api.clear_requests()
        # This script's functions are pickled by value, so the counts come back through a file.
        counts_file = Path(tempfile.mkdtemp(prefix="bench-planning-")) / "selected.json"
        pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
        _ = (pipeline | source | FilterMedia() | SampleStreams(SamplingSettings(nb_samples=args.nb_samples, seed=args.seed))
             | beam.Map(lambda r: "/".join(r.stream)) | beam.combiners.Count.PerElement() | beam.combiners.ToList()
             | beam.Map(lambda rows: counts_file.write_text(json.dumps(rows))))
        pipeline.run().wait_until_finish()
        finished = time.monotonic()
        requests = api.search_requests()
    pages = [r for r in requests if r.query.get("limit") != "0"]
    planning = len(requests) - len(pages)
    every_page = sum(s.total_pages() for s in plan.streams)
    minimum = plan.minimum_requests()
    selected = dict(json.loads(counts_file.read_text()))
    print(f"streams: {args.streams} × {args.per_stream:,} occurrences ({sum(s.count for s in plan.streams):,} with an image); "
          f"--nb_samples {args.nb_samples}")
    print(f"search requests: {len(requests)} = {planning} planning (count/facet) + {len(pages)} pages")
    print(f"minimum possible pages: {minimum} (+1 count call); reading every page: {every_page:,} pages")
    print(f"pages read / minimum: {len(pages) / max(minimum, 1):.2f}")
    print(f"selected per stream: min {min(selected.values(), default=0)}, max {max(selected.values(), default=0)}, "
          f"total {sum(selected.values())}")
    print(f"wall time: pipeline {finished - built:.1f} s (fake store built in {built - started:.1f} s)")
    counts = collections.Counter(selected.values())
    if len(counts) > 1:
        print(f"per-stream counts: {dict(counts)}")


if __name__ == "__main__":
    main()
