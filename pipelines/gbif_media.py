"""GBIF occurrence media → an ImageFolder dataset: sources → sampling → splits → download → manifest.

    python -m pipelines.gbif_media --query '{"speciesKey": [5352251]}' --label speciesKey \
        --random_subsets train=0.9,test=0.1 --output ./my_dataset
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_gbif.download.fetch import DownloadMedia
from beam_gbif.filtering import FilterMedia
from beam_gbif.manifest import WriteManifest
from beam_gbif.options import GbifMediaOptions, OptionError, normalize_argv, source_kind
from beam_gbif.sampling import SampleStreams
from beam_gbif.sources.dwca import ReadDwcaMedia
from beam_gbif.sources.occurrence_api import ReadOccurrenceMedia
from beam_gbif.sources.url_list import ReadUrlList
from beam_gbif.splits import AssignSplits

# The FnApiRunner is the DirectRunner's in-process engine. Naming it directly skips the
# DirectRunner's attempt to download the Prism binary, so local runs behave the same online
# and offline; `--runner DirectRunner` still selects Beam's default.
DEFAULT_LOCAL_RUNNER = "FnApiRunner"

_SOURCES = {"api": ReadOccurrenceMedia, "dwca": ReadDwcaMedia, "urls": ReadUrlList}


def read_media(options: GbifMediaOptions) -> beam.PTransform:
    return _SOURCES[source_kind(options)].from_options(options)


def build(pipeline: beam.Pipeline, options: PipelineOptions) -> dict[str, beam.PCollection]:
    """Adds the whole job to ``pipeline``; returns its PCollections by stage name."""
    opts = options.view_as(GbifMediaOptions)
    if not opts.output:
        raise OptionError("--output is required: a local folder or gs://bucket/prefix for the dataset")
    records = pipeline | "ReadMedia" >> read_media(opts)
    usable = records | "FilterMedia" >> FilterMedia.from_options(opts)
    selected = usable | "SampleStreams" >> SampleStreams.from_options(opts)
    assigned = selected | "AssignSplits" >> AssignSplits.from_options(opts)
    results = assigned | "DownloadMedia" >> DownloadMedia.from_options(opts)
    manifest = results | "WriteManifest" >> WriteManifest.from_options(opts)
    return {"records": records, "usable": usable, "selected": selected, "assigned": assigned, "results": results, "manifest": manifest}


def make_options(argv: Sequence[str]) -> PipelineOptions:
    options = PipelineOptions(normalize_argv(list(argv)))
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = DEFAULT_LOCAL_RUNNER
    return options


def run(argv: Sequence[str] | None = None) -> int:
    """Runs the job; returns a process exit code. Bad options print one clear line, no traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = make_options(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    try:
        pipeline = beam.Pipeline(options=options)
        build(pipeline, options)
    except OptionError as exc:
        print(f"beam-gbif: error: {exc}", file=sys.stderr)
        return 2
    result = pipeline.run()
    result.wait_until_finish()
    logging.getLogger(__name__).info("finished in %.1f s", time.monotonic() - started)
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
