"""Options → each stage's settings → the stage (ARCHITECTURE.md). The only module that reads options for a stage.

Every function takes the run's PipelineOptions (viewed as ``GbifMediaOptions``) and returns a
transform built from its frozen settings; validation lives in the settings themselves.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_gbif.core.shards import IMAGEFOLDER
from beam_gbif.io.dwca.meta import DwcaError
from beam_gbif.io.images import ImageSettings
from beam_gbif.io.manifest_files import has_manifest, same_root
from beam_gbif.transforms.card import WriteCard, run_facts
from beam_gbif.transforms.dataset import DatasetSettings, WriteDataset, staging_root
from beam_gbif.transforms.download import DownloadMedia, DownloadSettings
from beam_gbif.transforms.filtering import FilterMedia, FilterSettings
from beam_gbif.transforms.manifest import ManifestSettings, WriteManifest
from beam_gbif.transforms.sampling import SampleStreams, SamplingSettings
from beam_gbif.transforms.sources.dwca import DwcaReadSettings, ReadDwcaMedia
from beam_gbif.transforms.sources.occurrence_api import ApiReadSettings, ReadOccurrenceMedia
from beam_gbif.transforms.sources.url_list import ReadUrlList, UrlListSettings
from beam_gbif.transforms.spill import default_scratch_root
from beam_gbif.transforms.splits import AssignSplits, SplitSettings
from pipelines.options import (
    GbifMediaOptions,
    http_user_agent,
    parse_csv_list,
    parse_query,
    parse_ratios,
    parse_subset_streams,
    require_shared_path,
    runner_name,
    runs_remotely,
    source_kind,
)


def scratch_dir_for(options: PipelineOptions) -> str | None:
    """The spill folder for this run's runner: None (Beam's own shuffle) when its workers are remote."""
    return None if runs_remotely(options) else default_scratch_root()


def api_settings(options: PipelineOptions) -> ApiReadSettings:
    options = options.view_as(GbifMediaOptions)
    return ApiReadSettings(
        query=parse_query(options.query),
        api_url=options.gbif_api_url,
        user_agent=http_user_agent(options),
        label_field=options.label_field,
        stream_fields=tuple(parse_csv_list(options.split_streams_by)),
        media_type=options.media_type,
        nb_samples=options.nb_samples,
        nb_samples_per_stream=options.nb_samples_per_stream,
        weighted=bool(options.weighted_streams),
        one_media_per_occurrence=not options.all_media,
        licenses=frozenset(parse_csv_list(options.licenses)),
        seed=options.seed,
        api_concurrency=options.gbif_api_concurrency,
        extra_fields=tuple(parse_csv_list(options.extra_fields)),
    )


def read_occurrence_media(options: PipelineOptions) -> ReadOccurrenceMedia:
    return ReadOccurrenceMedia(api_settings(options))


def dwca_settings(options: PipelineOptions) -> DwcaReadSettings:
    options = options.view_as(GbifMediaOptions)
    settings = DwcaReadSettings(
        dwca=options.dwca,
        label_field=options.label_field,
        stream_fields=tuple(parse_csv_list(options.split_streams_by)),
        media_type=options.media_type,
        cache_root=options.dwca_root_path,
        api_url=options.gbif_api_url,
        user_agent=http_user_agent(options),
        download_predicate=options.gbif_download_predicate,
        licenses=frozenset(parse_csv_list(options.licenses)),
        one_media_seed=None if options.all_media else options.seed,
        scratch_dir=scratch_dir_for(options),
        extra_fields=tuple(parse_csv_list(options.extra_fields)),
    )
    if runs_remotely(options) and not str(settings.cache_root or "").startswith("gs://"):
        # The extracted files are read by the workers, which cannot see the launcher's disk (the default cache is on it).
        raise DwcaError(f"--dwca_root_path must be a gs:// folder on {runner_name(options)} "
                        "(the workers read the extracted archive from it)")
    return settings


def read_dwca_media(options: PipelineOptions) -> ReadDwcaMedia:
    return ReadDwcaMedia(dwca_settings(options))


def url_list_settings(options: PipelineOptions) -> UrlListSettings:
    options = options.view_as(GbifMediaOptions)
    require_shared_path(options, "input", options.input)
    require_shared_path(options, "retry_failed_from", options.retry_failed_from)
    return UrlListSettings(
        input=options.input,
        retry_failed_from=options.retry_failed_from,
        label_field=options.label_field or "label",
        stream_fields=tuple(parse_csv_list(options.split_streams_by)),
        media_type=options.media_type,
        extra_fields=tuple(parse_csv_list(options.extra_fields)),
    )


def read_url_list(options: PipelineOptions) -> ReadUrlList:
    return ReadUrlList(url_list_settings(options))


_SOURCES = {"api": read_occurrence_media, "dwca": read_dwca_media, "urls": read_url_list}


def read_media(options: PipelineOptions) -> beam.PTransform:
    """The source the options name (``--source``, or the one their inputs imply)."""
    options = options.view_as(GbifMediaOptions)
    return _SOURCES[source_kind(options)](options)


def filter_settings(options: PipelineOptions) -> FilterSettings:
    options = options.view_as(GbifMediaOptions)
    return FilterSettings(licenses=frozenset(parse_csv_list(options.licenses)), scratch_dir=scratch_dir_for(options))


def filter_media(options: PipelineOptions) -> FilterMedia:
    return FilterMedia(filter_settings(options))


def sampling_settings(options: PipelineOptions) -> SamplingSettings:
    options = options.view_as(GbifMediaOptions)
    return SamplingSettings(
        nb_samples=options.nb_samples,
        nb_samples_per_stream=options.nb_samples_per_stream,
        weighted=bool(options.weighted_streams),
        # The GBIF sources keep one media per occurrence as they build its records (where its
        # media are together, no shuffle needed); a URL list is taken as given.
        one_media_per_occurrence=False,
        seed=options.seed,
        scratch_dir=scratch_dir_for(options),
    )


def sample_streams(options: PipelineOptions, stream_sizes: beam.PCollection | None = None) -> SampleStreams:
    """``stream_sizes``: the source's ``{stream: size}`` singleton when it reads only part of each stream (build() passes the API's)."""
    return SampleStreams(sampling_settings(options), stream_sizes=stream_sizes)


def split_settings(options: PipelineOptions) -> SplitSettings:
    options = options.view_as(GbifMediaOptions)
    return SplitSettings(
        random_subsets=parse_ratios(options.random_subsets),
        subset_streams=parse_subset_streams(options.subset_streams),
        split_streams_by=tuple(parse_csv_list(options.split_streams_by)),
        seed=options.seed,
    )


def assign_splits(options: PipelineOptions) -> AssignSplits:
    return AssignSplits(split_settings(options))


def download_settings(options: PipelineOptions) -> DownloadSettings:
    options = options.view_as(GbifMediaOptions)
    return DownloadSettings(
        # The sharded formats fetch into a staging folder; their shards are written from it (transforms/dataset.py).
        output=staging_root(options.output, options.output_format) if options.output else options.output,
        max_concurrency=options.max_concurrency,
        per_host_concurrency=options.per_host_concurrency,
        per_host_rate=options.per_host_rate,
        max_retries=options.max_retries,
        timeout=options.timeout,
        max_bytes=options.max_bytes,
        max_buffer_bytes=options.max_buffer_bytes,
        allow_private_hosts=bool(options.allow_private_hosts),
        user_agent=http_user_agent(options),
        scratch_dir=scratch_dir_for(options),
        images=image_settings(options),
    )


def image_settings(options: PipelineOptions) -> ImageSettings:
    options = options.view_as(GbifMediaOptions)
    return ImageSettings(
        image_size=options.image_size,
        resize_mode=options.resize_mode,
        resize_only_if_bigger=bool(options.resize_only_if_bigger),
        min_image_size=options.min_image_size,
        max_aspect_ratio=options.max_aspect_ratio,
        encode_format=options.encode_format,
        encode_quality=options.encode_quality,
        validate_images=bool(options.validate_images),
        max_image_pixels=options.max_image_pixels,
        strip_metadata=bool(options.strip_metadata),
        source_size=options.source_size,
    )


def download_media(options: PipelineOptions) -> DownloadMedia:
    return DownloadMedia(download_settings(options))


def dataset_settings(options: PipelineOptions) -> DatasetSettings:
    options = options.view_as(GbifMediaOptions)
    return DatasetSettings(output=options.output or "", output_format=options.output_format, shard_size=options.shard_size,
                           seed=options.seed)


def write_dataset(options: PipelineOptions) -> WriteDataset:
    return WriteDataset(dataset_settings(options))


def manifest_settings(options: PipelineOptions, citations: Sequence[Mapping[str, Any]] = ()) -> ManifestSettings:
    """``citations``: what the source read and how to cite it (build() passes the DwC-A source's)."""
    options = options.view_as(GbifMediaOptions)
    require_shared_path(options, "output", options.output)
    output, retry = options.output, options.retry_failed_from
    return ManifestSettings(
        output=output,
        # A sharded format writes every shard again from this run's records: an earlier run's rows describe no file of its own.
        carry_over=bool(output) and options.output_format == IMAGEFOLDER and has_manifest(output),
        # Shards are rewritten and stale ones removed by WriteDataset; pruning media files would reach the staging folder.
        prune=bool(options.prune) and options.output_format == IMAGEFOLDER,
        earlier_is_selection=bool(retry and output and same_root(retry, output)),
        citations=tuple(citations),
        scratch_dir=scratch_dir_for(options),
    )


def write_manifest(options: PipelineOptions, citations: Sequence[Mapping[str, Any]] = (),
                   cited: beam.PCollection | None = None, streams: beam.PCollection | None = None) -> WriteManifest:
    """``cited``: citations the source learns at run time (a PCollection: ReadDwcaMedia.citations);
    ``streams``: the sampler's per-stream rows (SampleStreams.stream_stats)."""
    return WriteManifest(manifest_settings(options, citations), cited, streams)


def card_facts(options: PipelineOptions, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The run as the dataset card tells it; ``argv``: the command line as typed (default: the flags the options hold)."""
    opts = options.view_as(GbifMediaOptions)
    parser = argparse.ArgumentParser(add_help=False)
    GbifMediaOptions._add_argparse_args(parser)
    defaults = vars(parser.parse_args([]))
    # Options left at their default say nothing; the seed always matters (it decides the selection).
    values = {name: getattr(opts, name) for name in defaults if getattr(opts, name) != defaults[name] or name in ("seed", "label_field")}
    # Beam keeps the flags it was given in _flags; there is no public accessor.
    flags = list(argv) if argv is not None else list(getattr(options, "_flags", []))
    return run_facts(flags, values, source_kind(opts))


def write_card(options: PipelineOptions) -> WriteCard:
    """The card written by the job itself (remote runs: the launcher does not wait for the job to end)."""
    return WriteCard(options.view_as(GbifMediaOptions).output, card_facts(options))


_SOURCE_SETTINGS = {"api": api_settings, "dwca": dwca_settings, "urls": url_list_settings}


def check_options(options: PipelineOptions) -> None:
    """Every stage's own validation, without I/O: what a template's regexes must not let through (OptionError)."""
    _SOURCE_SETTINGS[source_kind(options.view_as(GbifMediaOptions))](options)
    for settings in (filter_settings, sampling_settings, split_settings, download_settings, dataset_settings):
        settings(options)
