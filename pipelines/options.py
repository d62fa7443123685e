"""Every user-facing option, as Beam PipelineOptions, and the parsing of their values.

Values may arrive from a shell or, as strings, from a Flex Template: every parser here
accepts both forms ("true", "-1", JSON text), so a template run and a CLI run agree.

Three flags share a name with Beam's own options and are mapped onto them:
``--label`` is beam-gbif's label field (stored as ``label_field``; Dataflow job labels
remain available as ``--labels``), ``--dry_run`` is Beam's TestOptions flag (which also
stops the DataflowRunner from submitting), ``--user_agent`` is SetupOptions'.
"""

from __future__ import annotations

import argparse
import math
import typing
from collections.abc import Callable, Sequence
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions, TestOptions

from beam_gbif import DEFAULT_USER_AGENT
from beam_gbif.core.errors import OptionError
from beam_gbif.core.image_geometry import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_RESIZE_MODE
from beam_gbif.core.records import DEFAULT_LABEL_FIELD, DEFAULT_MEDIA_TYPE, MEDIA_TYPES
from beam_gbif.core.shards import DEFAULT_SHARD_SIZE, IMAGEFOLDER, OUTPUT_FORMATS
from beam_gbif.core.split_rules import check_ratios_sum, check_split_name
from beam_gbif.io.gbif.client import DEFAULT_GBIF_API_URL
from beam_gbif.io.option_files import json_or_file, shown
from pipelines.console import LOG_LEVELS


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def parse_query(text: str | None) -> dict[str, list[str]]:
    """``--query``: a JSON object (or ``@file.json``); values are scalars or lists (OR)."""
    if text is None or str(text).strip() == "":
        return {}
    query, path = json_or_file("query", str(text))
    if not isinstance(query, dict):
        raise OptionError(f"--query must be a JSON object mapping GBIF search fields to values, got {type(query).__name__}")
    normalised: dict[str, list[str]] = {}
    for field, value in query.items():
        values = value if isinstance(value, list) else [value]
        if not values:
            raise OptionError(f"--query field {field!r} has an empty list of values")
        for item in values:
            if isinstance(item, (dict, list)) or item is None:
                raise OptionError(f"--query field {field!r} has an unsupported value {shown(item, path)}")
        normalised[field] = [_query_value(v) for v in values]
    return normalised


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_ratios(text: str | None) -> dict[str, float]:
    """``--random_subsets``: ``train=0.9,test=0.1`` or a JSON object; ratios sum to 1."""
    if text is None or str(text).strip() == "":
        return {}
    text = str(text).strip()
    path = None
    if text.startswith("{") or text.startswith("@"):
        raw, path = json_or_file("random_subsets", text)
        if not isinstance(raw, dict):
            raise OptionError("--random_subsets JSON must be an object of split name to ratio")
        pairs = list(raw.items())
    else:
        pairs = []
        for part in text.split(","):
            name, sep, ratio = part.partition("=")
            if not sep:
                raise OptionError(f"--random_subsets: {part!r} is not name=ratio (e.g. train=0.9,test=0.1)")
            pairs.append((name.strip(), ratio.strip()))
    ratios: dict[str, float] = {}
    for name, ratio in pairs:
        check_split_name(name, "--random_subsets")
        try:
            value = float(ratio)
        except (TypeError, ValueError):
            raise OptionError(f"--random_subsets: ratio of {name!r} is not a number: {shown(ratio, path)}") from None
        if not math.isfinite(value) or value < 0:
            raise OptionError(f"--random_subsets: ratio of {name!r} must be >= 0, got {shown(ratio, path)}")
        if name in ratios:
            raise OptionError(f"--random_subsets: split {name!r} is given twice")
        ratios[name] = value
    check_ratios_sum(ratios)
    return ratios


def parse_subset_streams(text: str | None) -> dict[str, Any]:
    """``--subset_streams``: JSON ``{"test": {"datasetKey": [...]}, "train": "*"}``."""
    if text is None or str(text).strip() == "":
        return {}
    raw, _ = json_or_file("subset_streams", str(text))
    if not isinstance(raw, dict):
        raise OptionError("--subset_streams must be a JSON object of split name to a field filter or \"*\"")
    for name, rule in raw.items():
        if rule != "*" and not isinstance(rule, dict):
            raise OptionError(f"--subset_streams: the rule of {name!r} must be \"*\" or an object of field to values")
    return raw


def parse_csv_list(text: str | None) -> list[str]:
    if text is None:
        return []
    return [part.strip() for part in str(text).split(",") if part.strip()]


def _add_source_options(add: Callable[..., Any]) -> None:
    """Sources."""
    add("--source", default=None, choices=["api", "dwca", "urls"],
        help="Where records come from; default: dwca if --dwca is given, urls if --input is given, else api.")
    add("--query", default=None,
        help="GBIF occurrence search query as JSON (or @file.json); list values are OR-ed.")
    add("--gbif_api_url", default=DEFAULT_GBIF_API_URL, help="Base URL of the GBIF API.")
    add("--dwca", default=None,
        help="A GBIF download to read: DOI (10.15468/dl.vnm42s), download key, local zip or gs:// URI.")
    add("--dwca_root_path", default=None,
        help="Cache folder (local or gs://) for downloaded archives; default ~/.cache/beam-gbif/dwca.")
    add("--gbif_download_predicate", default=None,
        help="JSON predicate to request a new GBIF download (needs GBIF_USER/GBIF_PWD in the environment).")
    add("--input", default=None, help="With --source urls: CSV/TSV with a url column, or one URL per line.")
    add("--retry_failed_from", default=None,
        help="Output folder of an earlier run: download again only its FAILED manifest rows.")


def _add_record_options(add: Callable[..., Any]) -> None:
    """Records."""
    add("--label_field", dest="label_field", default=DEFAULT_LABEL_FIELD,
        help="Occurrence field whose value labels an image and names its folder (CLI: --label).")
    add("--media_type", default=DEFAULT_MEDIA_TYPE, choices=MEDIA_TYPES, help="Media type to keep.")
    add("--licenses", default=None,
        help="Comma-separated licence codes to keep (e.g. CC0_1_0,CC_BY_4_0); unknown licences are then excluded.")


def _add_sampling_options(add: Callable[..., Any]) -> None:
    """Sampling and splits."""
    add("--split_streams_by", default=None, help="Comma-separated fields whose value combinations are streams.")
    add("--nb_samples", type=int, default=None,
        help="Total records to select across streams; -1 = the largest exactly balanced set.")
    add("--nb_samples_per_stream", type=int, default=None, help="At most this many records per stream.")
    add("--weighted_streams", type=parse_bool, nargs="?", const=True, default=False,
        help="Quotas proportional to stream sizes instead of balanced.")
    add("--all_media", type=parse_bool, nargs="?", const=True, default=False,
        help="Keep every media item of an occurrence (default: one per occurrence).")
    add("--random_subsets", default=None, help="Splits and ratios, e.g. train=0.9,test=0.1.")
    add("--subset_streams", default=None,
        help='JSON mapping splits to whole streams, e.g. {"test": {"datasetKey": ["..."]}, "train": "*"}.')
    add("--seed", type=int, default=0, help="Seed of every random choice (sampling, splits, read planning).")


def _add_download_options(add: Callable[..., Any]) -> None:
    """Download."""
    add("--output", default=None, help="Dataset root: a local folder or gs://bucket/prefix.")
    add("--max_concurrency", type=int, default=256, help="Requests in flight per worker process.")
    add("--per_host_concurrency", type=int, default=16, help="Requests in flight per media host, across all workers.")
    add("--per_host_rate", type=float, default=0.0, help="Requests per second per media host (0 = unlimited).")
    add("--max_retries", type=int, default=3,
        help="Retries of a media request on 5xx, 429, connection errors and timeouts (a timeout is retried once at most).")
    add("--timeout", type=float, default=30.0, help="Seconds one media request may take in all (connect, headers, body).")
    add("--max_bytes", type=int, default=50 * 1024 * 1024, help="Largest media file accepted, in bytes.")
    add("--prune", type=parse_bool, nargs="?", const=True, default=False,
        help="Delete files an earlier run left in --output that this run did not select, and downloaded files in no "
             "manifest row (default: keep them, listed in the manifest as KEPT_FROM_EARLIER_RUN).")
    add("--max_buffer_bytes", type=int, default=1 << 30,
        help="Bytes of media bodies held in memory (in flight or waiting to be written) per worker process.")
    add("--allow_private_hosts", type=parse_bool, nargs="?", const=True, default=False,
        help="Also allow media hosts on loopback and private addresses (local tests only); never link-local or cloud metadata.")
    add("--gbif_api_concurrency", type=int, default=4, help="Search requests in flight to the GBIF API.")


def _add_image_options(add: Callable[..., Any]) -> None:
    """Images (names as img2dataset's where it has one)."""
    add("--image_size", type=int, default=None,
        help="Target size in pixels; every stored image is then re-encoded (upright, no metadata). Default: originals kept.")
    add("--resize_mode", default=DEFAULT_RESIZE_MODE,
        help="no, keep_ratio (smaller side to --image_size), keep_ratio_largest (larger side), center_crop, border.")
    add("--resize_only_if_bigger", type=parse_bool, nargs="?", const=True, default=True,
        help="Never scale an image up (default true).")
    add("--min_image_size", type=int, default=0,
        help="Images whose smaller side is under this many pixels get FILTERED_TOO_SMALL (0: off).")
    add("--max_aspect_ratio", type=float, default=0.0,
        help="Images whose longer/shorter side is above this get FILTERED_ASPECT_RATIO (0: off).")
    add("--encode_format", default="jpg", help="Format of re-encoded images: jpg, webp or png.")
    add("--encode_quality", type=int, default=95, help="JPEG/WebP quality of re-encoded images, 1-100.")
    add("--validate_images", type=parse_bool, nargs="?", const=True, default=True,
        help="Decode every image body; one that does not decode gets FAILED_DECODE (default true).")
    add("--max_image_pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
        help="Images whose header claims more pixels get FAILED_DECODE, never decoded.")
    add("--strip_metadata", type=parse_bool, nargs="?", const=True, default=False,
        help="Also remove EXIF/XMP/GPS from originals stored without resizing (orientation kept).")
    add("--source_size", default="auto",
        help="auto, original, large, medium, small: fetch a smaller published version where a host has one.")


def _add_console_options(add: Callable[..., Any]) -> None:
    """Console."""
    add("--log_level", default=None, choices=LOG_LEVELS,
        help="What the console shows; default: the read plan, progress, the summary, warnings and errors. info adds "
             "details (retries), debug adds Apache Beam's own lines and tracebacks. -v is debug, -q is warning.")


def _add_format_options(add: Callable[..., Any]) -> None:
    """Dataset format."""
    add("--output_format", default=IMAGEFOLDER,
        help=f"Dataset layout: {', '.join(OUTPUT_FORMATS)} (imagefolder: one file per image plus metadata.jsonl).")
    add("--shard_size", type=int, default=DEFAULT_SHARD_SIZE, help="Records per shard of the sharded formats.")
    add("--extra_fields", default=None,
        help="Comma-separated occurrence fields carried into every record, the manifest and the dataset's metadata "
             "(API field names, or DwC terms by short name or URI), e.g. scientificName,family,eventDate.")


class GbifMediaOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        for add_group in (_add_source_options, _add_record_options, _add_sampling_options, _add_download_options, _add_image_options,
                          _add_console_options, _add_format_options):
            add_group(parser.add_argument)
class _OneLineParser(argparse.ArgumentParser):
    """argparse that raises instead of printing its whole usage block and exiting."""

    def error(self, message: str) -> typing.NoReturn:
        raise OptionError(f"{message}; see beam-gbif --help")


def check_argv(argv: Sequence[str]) -> None:
    """beam-gbif's own flags parse (types, choices), or one OptionError line (Beam's parser would print a page of usage)."""
    parser = _OneLineParser(add_help=False, allow_abbrev=False)
    GbifMediaOptions._add_argparse_args(parser)
    parser.parse_known_args(normalize_argv(argv))


_ALIASES = {"--label": "--label_field", "-v": "--log_level=debug", "-q": "--log_level=warning"}
_DRY_RUN = "--dry_run"


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """Map beam-gbif's flags that share a name with Beam's onto their real destinations.

    Beam's ``--dry_run`` is an untyped string option, so the DataflowRunner takes any value,
    "false" included, as true: a false value is dropped here instead of passed on.
    """
    out: list[str] = []
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        name, sep, value = arg.partition("=")
        if name in _ALIASES:
            arg = _ALIASES[name] + (sep + value if sep else "")
        elif name == _DRY_RUN:
            if not sep and index < len(args) and _is_bool_text(args[index]):
                value, sep = args[index], "="
                index += 1
            if sep and not _is_bool_text(value):
                arg = f"{name}={value}"  # not a boolean: is_dry_run() reports it
            elif sep and not parse_bool(value):
                continue
            else:
                arg = f"{name}=true"
        out.append(arg)
    return out


def _is_bool_text(text: str) -> bool:
    try:
        parse_bool(text)
    except argparse.ArgumentTypeError:
        return False
    return not text.startswith("-") and text != ""


def is_dry_run(options: PipelineOptions) -> bool:
    value = options.view_as(TestOptions).dry_run
    try:
        return parse_bool(value)
    except argparse.ArgumentTypeError as exc:
        raise OptionError(f"--dry_run: {exc}") from None


def http_user_agent(options: PipelineOptions) -> str:
    return options.view_as(SetupOptions).user_agent or DEFAULT_USER_AGENT


def source_kind(options: GbifMediaOptions) -> str:
    if options.source:
        return options.source
    if options.dwca or options.gbif_download_predicate:
        return "dwca"
    if options.input or options.retry_failed_from:
        return "urls"
    return "api"


_LOCAL_RUNNERS = ("fnapi", "direct", "switchingdirect", "bundlebaseddirect", "prism")


def runs_remotely(options: PipelineOptions) -> bool:
    """True unless the runner's workers are this machine's processes (no --runner, or a local runner).

    Names as Beam resolves them: any case, with or without the ``Runner`` suffix or a module path.
    """
    runner = (options.view_as(StandardOptions).runner or "").lower().rsplit(".", 1)[-1].removesuffix("runner")
    return bool(runner) and runner not in _LOCAL_RUNNERS


def runner_name(options: PipelineOptions) -> str:
    return options.view_as(StandardOptions).runner or ""


def require_shared_path(options: PipelineOptions, flag: str, path: str | None) -> None:
    """On a remote runner (Dataflow), workers cannot see the launcher's disk: a path they read must be gs://."""
    if path and "://" not in path and runs_remotely(options):
        raise OptionError(f"--{flag} {path}: workers of the {options.view_as(StandardOptions).runner} cannot reach a path on this machine; "
                          "use gs://bucket/...")
