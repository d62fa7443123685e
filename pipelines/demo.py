"""Offline demo: the real pipeline against the local stand-ins (fake GBIF API + media server).

    python -m pipelines.demo [--output ./demo_output] [any pipeline flag, e.g. --nb_samples 60]

Starts both servers on 127.0.0.1 (free ports), serves synthetic occurrences of several species
in two datasets, runs the job with a label, per-stream balancing and a train/test split, and
prints the summary and where the dataset is. Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from beam_gbif.testing.fake_gbif import FakeGbifApi
from beam_gbif.testing.media_server import MediaServer
from beam_gbif.testing.synthetic import SyntheticOccurrences
from pipelines.gbif_media import run

# The species and datasets of gbif-dl's README example: three invasive plants, PlantNet and iNaturalist.
DEMO_SPECIES = [5352251, 3190653, 3189866]
DEMO_DATASETS = ["7a3679ef-5582-4aaa-81f0-8c2545cafc81", "50c9509d-22c7-4a22-a47d-8c48425ef4a7"]
DEMO_OCCURRENCES_PER_STREAM = 40


def demo_argv(api_url: str, output: str) -> list[str]:
    query = {"speciesKey": DEMO_SPECIES, "datasetKey": DEMO_DATASETS}
    return [
        f"--gbif_api_url={api_url}",
        f"--query={json.dumps(query)}",
        "--label=speciesKey",
        "--split_streams_by=speciesKey,datasetKey",
        "--nb_samples_per_stream=25",
        "--random_subsets=train=0.8,test=0.2",
        f"--output={output}",
        # The media server listens on 127.0.0.1, which a real run refuses to fetch from.
        "--allow_private_hosts",
    ]


def _media_server(output: Path) -> MediaServer:
    """The media server, on the port of the previous demo run into ``output`` when it is free.

    Media URLs contain the port, and file names are the sha1 of the URL: the same port makes a
    rerun find its files (SKIPPED_EXISTING) instead of downloading a second copy.
    """
    port_file = output / ".demo-media-port"
    try:
        server = MediaServer(latency=0.02, port=int(port_file.read_text())).start()
    except (OSError, ValueError, RuntimeError):
        server = MediaServer(latency=0.02).start()
    output.mkdir(parents=True, exist_ok=True)
    port_file.write_text(str(server.port))
    return server


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="./demo_output", help="Where the demo dataset goes (default ./demo_output).")
    args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    output = str(Path(args.output).resolve())
    media = _media_server(Path(output))
    try:
        occurrences = SyntheticOccurrences(DEMO_SPECIES, DEMO_DATASETS, per_stream=DEMO_OCCURRENCES_PER_STREAM,
                                           media_base_url=media.base_url, seed=0)
        with FakeGbifApi(occurrences) as api:
            print(f"beam-gbif demo: fake GBIF API at {api.base_url}, media server at {media.base_url}")
            code = run(demo_argv(api.base_url, output) + list(extra))
            print(f"beam-gbif demo: {media.total_hits} media requests served")
    finally:
        media.stop()
    if code == 0:
        print(f"beam-gbif demo: dataset in {output} (ImageFolder layout: split/label/sha1.ext); "
              f"open {output}/README.md, its card; check it with: beam-gbif inspect {output} --verify")
    sys.exit(code)


if __name__ == "__main__":
    main()
