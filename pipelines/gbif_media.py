"""GBIF occurrence media → an ImageFolder dataset: sources → sampling → splits → download → manifest.

    python -m pipelines.gbif_media --query '{"speciesKey": [5352251]}' --label speciesKey \
        --random_subsets train=0.9,test=0.1 --output ./my_dataset
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineState

from beam_gbif.core.errors import OptionError
from beam_gbif.io.gbif.client import GbifApiError
from beam_gbif.io.leftovers import remove_leftovers
from beam_gbif.io.store import store_for
from beam_gbif.transforms.spill import remove_spill_folders
from beam_gbif.transforms.stats import finalize_stats, format_summary, metric_counters
from pipelines import stages
from pipelines.options import GbifMediaOptions, is_dry_run, normalize_argv, runs_remotely, source_kind

# The FnApiRunner is the DirectRunner's in-process engine. Naming it directly skips the
# DirectRunner's attempt to download the Prism binary, so local runs behave the same online
# and offline; `--runner DirectRunner` still selects Beam's default.
DEFAULT_LOCAL_RUNNER = "FnApiRunner"

def build(pipeline: beam.Pipeline, options: PipelineOptions) -> dict[str, beam.PCollection]:
    """Adds the whole job to ``pipeline``; returns its PCollections by stage name.

    The one place where stages exchange facts: the DwC-A source's citation reaches the manifest
    here, and the API source's stream sizes (GBIF's counts) the sampler's weighted quotas.
    """
    opts = options.view_as(GbifMediaOptions)
    if not opts.output:
        raise OptionError("--output is required: a local folder or gs://bucket/prefix for the dataset")
    # Before the source: its construction may already ask the GBIF API (planning), and a bad format option must not.
    write_dataset = stages.write_dataset(opts)
    source = stages.read_media(opts)
    records = pipeline | "ReadMedia" >> source
    usable = records | "FilterMedia" >> stages.filter_media(opts)
    sampler = stages.sample_streams(opts, getattr(source, "stream_sizes", None))
    selected = usable | "SampleStreams" >> sampler
    assigned = selected | "AssignSplits" >> stages.assign_splits(opts)
    downloaded = assigned | "DownloadMedia" >> stages.download_media(opts)
    results = downloaded | "WriteDataset" >> write_dataset
    rejected = getattr(source, "rejected", None)
    if rejected is not None:  # rows a source could not read: already failed, straight to the manifest
        results = (results, rejected) | "WithUnreadableRows" >> beam.Flatten()
    manifest = results | "WriteManifest" >> stages.write_manifest(opts, cited=getattr(source, "citations", None))
    return {"records": records, "usable": usable, "selected": selected, "assigned": assigned, "results": results, "manifest": manifest,
            "stream_stats": sampler.stream_stats}


def make_options(argv: Sequence[str]) -> PipelineOptions:
    options = PipelineOptions(normalize_argv(list(argv)))
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = DEFAULT_LOCAL_RUNNER
    return options


def describe_plan(options: GbifMediaOptions) -> str:
    """What a run would read and select, without downloading anything (``--dry_run``)."""
    source = stages.read_media(options)
    lines = [f"beam-gbif dry run: source {source_kind(options)}, output {options.output}"]
    if hasattr(source, "describe_plan"):
        lines.append(source.describe_plan())
    else:
        lines.append("streams and quotas are known only once the records are read; nothing is downloaded")
    return "\n".join(lines)


def usage() -> str:
    """Help for beam-gbif's own options (Beam's options are documented by Beam)."""
    parser = argparse.ArgumentParser(
        prog="beam-gbif", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="GBIF occurrence media to an ImageFolder dataset (local folder or gs://), with Apache Beam.",
        epilog="--label FIELD is stored as --label_field; --dry_run prints the plan and downloads nothing; --user_agent sets "
               "the User-Agent of every request. Every Beam option (--runner, --direct_num_workers, --project, ...) also "
               f"applies; without --runner the local {DEFAULT_LOCAL_RUNNER} runs the job.")
    GbifMediaOptions._add_argparse_args(parser)
    return parser.format_help()


_WHILE_RUNNING = re.compile(r" \[while running '[^']*'\]$")


def _root_cause(exc: BaseException) -> tuple[str, bool]:
    """The innermost message of the known error types a runner wrapped (else the last line), and
    whether the user's input is at fault (an OptionError: a DwC-A without the label column, say)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, (OptionError, GbifApiError)):
            return _WHILE_RUNNING.sub("", str(seen)), isinstance(seen, OptionError)
        seen = seen.__cause__ or seen.__context__
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return _WHILE_RUNNING.sub("", lines[-1]) if lines else type(exc).__name__, False


def run(argv: Sequence[str] | None = None) -> int:
    """Runs the job; returns a process exit code. Bad options print one clear line, no traceback.

    Local runs wait, then complete stats.json with the run's counters and wall time and print
    the summary; a Dataflow submission returns once the job is submitted (stats.json is
    written by the job itself).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(usage())
        return 0
    options = make_options(argv)
    opts = options.view_as(GbifMediaOptions)
    started = time.monotonic()
    try:
        if is_dry_run(options):
            print(describe_plan(opts))
            if not runs_remotely(options):
                return 0
        pipeline = beam.Pipeline(options=options)
        build(pipeline, options)
    except (OptionError, GbifApiError) as exc:
        print(f"beam-gbif: error: {exc}", file=sys.stderr)
        return 2
    try:
        if not is_dry_run(options):
            # Before any writer of this run starts: a killed run's temp folders and files look like a running one's.
            remove_leftovers(store_for(opts.output))
        result = pipeline.run()
        if runs_remotely(options):
            return 0
        result.wait_until_finish()
    except Exception as exc:  # noqa: BLE001 - a runner wraps the cause; name it in one line
        message, bad_input = _root_cause(exc)
        # Bad input found once the pipeline reads it (the archive is only opened by the pipeline) is still bad usage.
        print(f"beam-gbif: error: {message}" if bad_input else f"beam-gbif: error: the pipeline failed: {message}", file=sys.stderr)
        return 2 if bad_input else 1
    finally:
        if not runs_remotely(options):
            remove_spill_folders(pipeline)
    stats = finalize_stats(opts.output, metric_counters(result), time.monotonic() - started)
    print(format_summary(stats))
    return 0 if result.state == PipelineState.DONE else 1


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
