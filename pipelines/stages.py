"""Options → each stage's settings → the stage (ARCHITECTURE.md). The only module that reads options for a stage.

Every function takes the run's PipelineOptions (viewed as ``GbifMediaOptions``) and returns a
transform built from its frozen settings; validation lives in the settings themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_gbif.io.dwca.meta import DwcaError
from beam_gbif.io.manifest_files import same_root
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


def read_occurrence_media(options: PipelineOptions) -> ReadOccurrenceMedia:
    options = options.view_as(GbifMediaOptions)
    return ReadOccurrenceMedia(ApiReadSettings(
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
    ))


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
    )
    if runs_remotely(options) and not str(settings.cache_root or "").startswith("gs://"):
        # The extracted files are read by the workers, which cannot see the launcher's disk (the default cache is on it).
        raise DwcaError(f"--dwca_root_path must be a gs:// folder on {runner_name(options)} "
                        "(the workers read the extracted archive from it)")
    return settings


def read_dwca_media(options: PipelineOptions) -> ReadDwcaMedia:
    return ReadDwcaMedia(dwca_settings(options))


def read_url_list(options: PipelineOptions) -> ReadUrlList:
    options = options.view_as(GbifMediaOptions)
    require_shared_path(options, "input", options.input)
    require_shared_path(options, "retry_failed_from", options.retry_failed_from)
    return ReadUrlList(UrlListSettings(
        input=options.input,
        retry_failed_from=options.retry_failed_from,
        label_field=options.label_field or "label",
        stream_fields=tuple(parse_csv_list(options.split_streams_by)),
        media_type=options.media_type,
    ))


_SOURCES = {"api": read_occurrence_media, "dwca": read_dwca_media, "urls": read_url_list}


def read_media(options: PipelineOptions) -> beam.PTransform:
    """The source the options name (``--source``, or the one their inputs imply)."""
    options = options.view_as(GbifMediaOptions)
    return _SOURCES[source_kind(options)](options)


def filter_media(options: PipelineOptions) -> FilterMedia:
    options = options.view_as(GbifMediaOptions)
    return FilterMedia(FilterSettings(licenses=frozenset(parse_csv_list(options.licenses)), scratch_dir=scratch_dir_for(options)))


def sample_streams(options: PipelineOptions) -> SampleStreams:
    options = options.view_as(GbifMediaOptions)
    return SampleStreams(SamplingSettings(
        nb_samples=options.nb_samples,
        nb_samples_per_stream=options.nb_samples_per_stream,
        weighted=bool(options.weighted_streams),
        # The GBIF sources keep one media per occurrence as they build its records (where its
        # media are together, no shuffle needed); a URL list is taken as given.
        one_media_per_occurrence=False,
        seed=options.seed,
        scratch_dir=scratch_dir_for(options),
    ))


def assign_splits(options: PipelineOptions) -> AssignSplits:
    options = options.view_as(GbifMediaOptions)
    return AssignSplits(SplitSettings(
        random_subsets=parse_ratios(options.random_subsets),
        subset_streams=parse_subset_streams(options.subset_streams),
        split_streams_by=tuple(parse_csv_list(options.split_streams_by)),
        seed=options.seed,
    ))


def download_media(options: PipelineOptions) -> DownloadMedia:
    options = options.view_as(GbifMediaOptions)
    return DownloadMedia(DownloadSettings(
        output=options.output,
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
    ))


def write_manifest(options: PipelineOptions, citations: Sequence[Mapping[str, Any]] = ()) -> WriteManifest:
    """``citations``: what the source read and how to cite it (build() passes the DwC-A source's)."""
    options = options.view_as(GbifMediaOptions)
    require_shared_path(options, "output", options.output)
    retry = options.retry_failed_from
    carry = retry if retry and options.output and same_root(retry, options.output) else None
    return WriteManifest(ManifestSettings(output=options.output, carry_over_from=carry, citations=tuple(citations),
                                          scratch_dir=scratch_dir_for(options)))
