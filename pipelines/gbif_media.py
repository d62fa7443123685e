"""GBIF occurrence media → an ImageFolder dataset: sources → sampling → splits → download → manifest.

    python -m pipelines.gbif_media --query '{"speciesKey": [5352251]}' --label speciesKey \
        --random_subsets train=0.9,test=0.1 --output ./my_dataset
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineState

from beam_gbif.core.errors import OptionError
from beam_gbif.io.leftovers import remove_leftovers
from beam_gbif.io.store import store_for
from beam_gbif.transforms.card import write_card
from beam_gbif.transforms.live_bars import live_bars
from beam_gbif.transforms.spill import remove_spill_folders
from beam_gbif.transforms.stats import finalize_stats, format_summary, metric_counters
from pipelines import stages
from pipelines.console import check_credentials, check_output, describe_error, logging_for
from pipelines.options import GbifMediaOptions, check_argv, is_dry_run, normalize_argv, runs_remotely, source_kind

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
    # Every stage's own checks before any of them is built: a source may read its input while it is
    # built, and a bad option of a later stage (images, formats) must stop the run before that.
    stages.check_options(options)
    source = stages.read_media(opts)
    records = pipeline | "ReadMedia" >> source
    usable = records | "FilterMedia" >> stages.filter_media(opts)
    sampler = stages.sample_streams(opts, getattr(source, "stream_sizes", None))
    selected = usable | "SampleStreams" >> sampler
    assigned = selected | "AssignSplits" >> stages.assign_splits(opts)
    downloaded = assigned | "DownloadMedia" >> stages.download_media(opts)
    results = downloaded | "WriteDataset" >> stages.write_dataset(opts)
    rejected = getattr(source, "rejected", None)
    if rejected is not None:  # rows a source could not read: already failed, straight to the manifest
        results = (results, rejected) | "WithUnreadableRows" >> beam.Flatten()
    manifest = results | "WriteManifest" >> stages.write_manifest(opts, cited=getattr(source, "citations", None),
                                                                         streams=sampler.stream_stats)
    if runs_remotely(options):  # a local run() writes the card after the pipeline, with the run's counters and time
        manifest | "WriteCard" >> stages.write_card(options)
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


def run(argv: Sequence[str] | None = None) -> int:
    """Runs the job; returns a process exit code: 0, 1 for a failed run, 2 for bad usage.

    Every error is one or two lines on stderr (the traceback only at ``--log_level debug``).
    Local runs wait, then complete stats.json with the run's counters and wall time, write the
    dataset card and print the summary; a Dataflow submission returns once the job is submitted
    (stats.json is written by the job itself).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(usage())
        return 0
    try:
        check_argv(argv)
    except OptionError as exc:
        return _report(exc, debug=False)
    options = make_options(argv)
    opts = options.view_as(GbifMediaOptions)
    with logging_for(opts.log_level):
        try:
            return _run(options, opts, argv)
        except Exception as exc:  # noqa: BLE001 - a runner wraps the cause; name it in one or two lines
            return _report(exc, debug=opts.log_level == "debug")


def _report(exc: BaseException, debug: bool) -> int:
    """Prints the error as one or two lines (after its traceback when debugging); returns the exit code."""
    if debug:
        traceback.print_exception(exc)
    message, code = describe_error(exc)
    print(f"beam-gbif: error: {message}", file=sys.stderr)
    return code


def _run(options: PipelineOptions, opts: GbifMediaOptions, argv: Sequence[str]) -> int:
    started = time.monotonic()
    if is_dry_run(options):
        stages.check_options(options)  # bad options are refused even when only the plan is printed
        print(describe_plan(opts))
        if not runs_remotely(options):
            return 0
    check_credentials(opts.output or "")
    pipeline = beam.Pipeline(options=options)
    build(pipeline, options)
    check_output(opts.output)  # after build() has checked every option: a bad option leaves no folder behind
    if not is_dry_run(options):
        # Before any writer of this run starts: a killed run's temp folders and files look like a running one's.
        remove_leftovers(store_for(opts.output))
    try:
        with live_bars(sys.stderr.isatty() and not runs_remotely(options)):
            result = pipeline.run()
            if runs_remotely(options):
                return 0
            result.wait_until_finish()
    finally:
        if not runs_remotely(options):
            remove_spill_folders(pipeline)
    stats = finalize_stats(opts.output, metric_counters(result), time.monotonic() - started)
    write_card(opts.output, stats, stages.card_facts(options, argv))
    print(format_summary(stats))
    return 0 if result.state == PipelineState.DONE else 1


def main() -> None:
    """The ``beam-gbif`` command: ``beam-gbif inspect OUTPUT [--verify]``, else a run."""
    if sys.argv[1:2] == ["inspect"]:
        from pipelines import inspect

        sys.exit(inspect.run(sys.argv[2:]))
    sys.exit(run())


if __name__ == "__main__":
    main()
