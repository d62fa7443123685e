"""SampleStreams: exact, seeded per-stream quotas (ARCHITECTURE.md, "Sampling" in the README).

    records ─► OneMediaPerOccurrence (only if asked; the pipeline never asks: the GBIF sources
               keep one media per occurrence as they build an occurrence's records)
            ─► per stream: exact availability ─► compute_quotas ─► the quota_i lowest ranks

A record's rank is a seeded hash of its URL, so the same records and seed select the same
set on any runner and any number of workers. How the counts meet the records depends on the
mode (see SampleStreams: one bounded pass, two passes, or a fixed cap); every strategy
selects the identical set. Per-stream figures (available, quota, requested, selected,
short) are exposed as ``SampleStreams.stream_stats`` once the transform is applied.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_gbif import METRICS_NAMESPACE
from beam_gbif.core.quotas import Stream, compute_quotas, validate_sampling_options, weights_from_sizes
from beam_gbif.core.records import MediaRecord
from beam_gbif.transforms.coders import MediaRecordCoder
from beam_gbif.transforms.sampling.bounded import BoundedBalancedSampleFn, outcome_figures
from beam_gbif.transforms.sampling.combiners import ONE_MEDIA_PURPOSE, STREAM_SAMPLE_PURPOSE, LowestQuotaFn, LowestRankedFn, ranked
from beam_gbif.transforms.spill import HoldOnDisk

__all__ = ["SampleStreams", "SamplingSettings", "OneMediaPerOccurrence", "compute_quotas", "stream_stats_rows"]

STREAMS = "sampling_streams"
RECORDS_AVAILABLE = "sampling_records_available"
RECORDS_SELECTED = "sampling_records_selected"
SHORT_STREAMS = "sampling_short_streams"
_LOG = logging.getLogger(__name__)

# Strategies (see SampleStreams).
AUTO, BOUNDED, TWO_PASS, CAP_ONLY, EVERYTHING = "auto", "bounded", "two_pass", "cap_only", "everything"
# Up to this many selected records, one bounded pass beats holding the input for a second one.
BOUNDED_SAMPLE_LIMIT = 1_000_000
_MAX_LOGGED_SHORT_STREAMS = 20


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """How many records each stream keeps.

    ``nb_samples``: the total across streams (-1: the largest exactly balanced set; None: no
    total). ``nb_samples_per_stream``: a cap per stream. ``weighted``: quotas proportional to
    stream sizes instead of balanced. ``one_media_per_occurrence``: keep one media of each
    occurrence first (the GBIF sources already do, so the pipeline leaves it off). ``seed``:
    of every rank. ``strategy``: "auto", or force "bounded"/"two_pass" (tests, benchmarks).
    ``scratch_dir``: the local runners' spill folder (None: Beam's own shuffle).
    """

    nb_samples: int | None = None
    nb_samples_per_stream: int | None = None
    weighted: bool = False
    one_media_per_occurrence: bool = False
    seed: int = 0
    strategy: str = AUTO
    scratch_dir: str | None = None

    def __post_init__(self) -> None:
        validate_sampling_options(nb_samples=self.nb_samples, nb_samples_per_stream=self.nb_samples_per_stream, weighted=self.weighted)


class OneMediaPerOccurrence(beam.PTransform):
    """Per occurrence key, the media with the lowest seeded hash of its URL."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self._seed = seed

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (
            records
            | "KeyByOccurrence" >> beam.Map(lambda record: (record.occurrence_key, record))
            | "LowestRankedMedia" >> beam.CombinePerKey(LowestRankedFn(self._seed, ONE_MEDIA_PURPOSE))
            | "DropKeys" >> beam.Values().with_output_types(MediaRecord)
        )


class _CountPerStream(beam.PTransform):
    """A singleton ``{stream: count}`` (``{}`` for an empty input)."""

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (
            records
            | "OnePerRecord" >> beam.Map(lambda record: (record.stream, 1))
            | "SumPerStream" >> beam.CombinePerKey(sum)
            | "AsDict" >> beam.combiners.ToDict()
        )


def _with_quota(record: MediaRecord, quotas: dict[Stream, int], seed: int) -> Iterable[tuple[Stream, tuple[int, Any]]]:
    quota = quotas.get(record.stream, 0)
    if quota > 0:
        yield record.stream, (quota, ranked(record, seed, STREAM_SAMPLE_PURPOSE))


def _with_fixed_quota(record: MediaRecord, quota: int, seed: int) -> tuple[Stream, tuple[int, Any]]:
    return record.stream, (quota, ranked(record, seed, STREAM_SAMPLE_PURPOSE))


class _KeepLowestPerStream(beam.PTransform):
    """Per stream, the quota lowest-ranked records: from a quotas side input, or one fixed quota."""

    def __init__(self, seed: int, quotas: beam.PCollection | None = None, fixed_quota: int | None = None):
        super().__init__()
        self._seed = seed
        self._quotas = quotas
        self._fixed_quota = fixed_quota

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        if self._quotas is not None:
            keyed = records | "KeyWithQuota" >> beam.FlatMap(_with_quota, quotas=beam.pvalue.AsSingleton(self._quotas), seed=self._seed)
        else:
            keyed = records | "KeyWithCap" >> beam.Map(_with_fixed_quota, quota=self._fixed_quota, seed=self._seed)
        lowest = keyed | "LowestQuotaPerStream" >> beam.CombinePerKey(LowestQuotaFn())
        return lowest | "Selected" >> beam.FlatMap(lambda kv: kv[1]).with_output_types(MediaRecord)


def _quotas_weighted_by_sizes(availability: dict[Stream, int], sizes: dict[Stream, int], rule: functools.partial) -> dict[Stream, int]:
    """The quotas with the source's stream sizes as the weights, the records read as the bounds."""
    weights = weights_from_sizes(availability, sizes)
    if weights is None and sizes:
        unnamed = [stream for stream in availability if stream not in sizes]
        _LOG.warning("weighted quotas: the source counted %d stream(s) but not %d of the %d read (e.g. %s); "
                     "weighing the streams by the records read instead", len(sizes), len(unnamed), len(availability), unnamed[:3])
    return rule(availability, weights=weights)


def requested_per_stream(nb_samples: int | None, nb_samples_per_stream: int | None, weighted: bool, nb_streams: int) -> int | None:
    """How many records each stream was asked for, or None when the rule asks nothing fixed.

    A per-stream cap asks for the cap; a balanced N asks every stream for its even share
    N // streams (capped). -1 and weighted quotas adapt to availability, so they ask nothing
    a stream could fall short of.
    """
    if nb_samples is None:
        return nb_samples_per_stream
    if nb_samples == -1 or weighted or nb_streams == 0:
        return None
    share = nb_samples // nb_streams
    return share if nb_samples_per_stream is None else min(share, nb_samples_per_stream)


def stream_stats_rows(
    selected_counts: dict[Stream, int], availability: dict[Stream, int], quotas: dict[Stream, int], requested: int | None
) -> list[dict[str, Any]]:
    """One row per stream: stream, available, quota, requested, selected, short."""
    rows = []
    for stream in sorted(availability):
        available = availability[stream]
        rows.append(
            {
                "stream": list(stream),
                "available": available,
                "quota": quotas.get(stream, available),
                "requested": requested,
                "selected": selected_counts.get(stream, 0),
                "short": requested is not None and available < requested,
            }
        )
    return rows


class _ReportStreams(beam.DoFn):
    """(selected counts, availability, quotas) → one row per stream; counts and logs short streams."""

    def __init__(self, nb_samples: int | None, nb_samples_per_stream: int | None, weighted: bool):
        self._rule = (nb_samples, nb_samples_per_stream, weighted)
        self._streams = Metrics.counter(METRICS_NAMESPACE, STREAMS)
        self._available = Metrics.counter(METRICS_NAMESPACE, RECORDS_AVAILABLE)
        self._selected = Metrics.counter(METRICS_NAMESPACE, RECORDS_SELECTED)
        self._short = Metrics.counter(METRICS_NAMESPACE, SHORT_STREAMS)

    def process(self, figures: tuple[dict[Stream, int], dict[Stream, int], dict[Stream, int]]) -> Iterable[dict[str, Any]]:
        selected_counts, availability, quotas = figures
        requested = requested_per_stream(*self._rule, nb_streams=len(availability))
        rows = stream_stats_rows(selected_counts, availability, quotas, requested)
        short = [row for row in rows if row["short"]]
        self._streams.inc(len(rows))
        self._available.inc(sum(row["available"] for row in rows))
        self._selected.inc(sum(row["selected"] for row in rows))
        self._short.inc(len(short))
        for row in short[:_MAX_LOGGED_SHORT_STREAMS]:
            _LOG.warning(
                "stream %s is short: %d records available, %d asked for; all of them are selected",
                row["stream"],
                row["available"],
                requested,
            )
        if len(short) > _MAX_LOGGED_SHORT_STREAMS:
            _LOG.warning("... and %d more short streams (see the per-stream stats)", len(short) - _MAX_LOGGED_SHORT_STREAMS)
        yield from rows


class SampleStreams(beam.PTransform):
    """Selects exact, seeded per-stream quotas of MediaRecords (``record.stream`` set by the sources).

    Two strategies give the identical record set:

    - ``"bounded"`` (balanced ``nb_samples`` up to ``BOUNDED_SAMPLE_LIMIT``): one pass, a global
      combiner that drops records as soon as they can no longer be selected; no runner has to
      hold the input, but the final merge holds the O(nb_samples) selected records.
    - ``"two_pass"`` (``-1``, weighted, larger samples): count every stream, then keep the lowest
      quota_i per stream with a per-stream combiner (memory O(quota) per key); the input is kept
      until the counts are known (on Dataflow, in its shuffle; with a ``scratch_dir``, the local
      runners' setting, in files: beam_gbif.transforms.spill.HoldOnDisk).

    A per-stream cap alone needs no counts (a per-stream combiner of the cap, one pass); no
    sampling option at all selects everything without a shuffle.

    ``stream_sizes``: a singleton PCollection ``{stream: size}`` from a source that reads only
    part of each stream (the GBIF API's ReadOccurrenceMedia.stream_sizes). Weighted quotas
    are then proportional to those sizes, and what was read only bounds them; without it (or
    when it does not name every stream read) they are proportional to the records read.

    After the transform is applied, ``stream_stats`` is a PCollection of one dict per stream:
    ``{"stream": [...], "available": int, "quota": int, "requested": int | None,
    "selected": int, "short": bool}``.
    """

    def __init__(self, settings: SamplingSettings = SamplingSettings(), stream_sizes: beam.PCollection | None = None):
        super().__init__()
        self.settings = settings
        self._stream_sizes = stream_sizes
        self.strategy = self._choose_strategy(settings.strategy)
        self.stream_stats: beam.PCollection | None = None

    def _choose_strategy(self, strategy: str) -> str:
        balanced = self.settings.nb_samples is not None and self.settings.nb_samples > 0 and not self.settings.weighted
        if strategy == AUTO:
            if self.settings.nb_samples is None:
                return CAP_ONLY if self.settings.nb_samples_per_stream is not None else EVERYTHING
            return BOUNDED if balanced and self.settings.nb_samples <= BOUNDED_SAMPLE_LIMIT else TWO_PASS
        if strategy == BOUNDED and not balanced:
            raise ValueError("the bounded strategy needs a balanced, positive nb_samples")
        if strategy == TWO_PASS and self.settings.nb_samples is None:
            raise ValueError("the two-pass strategy needs nb_samples")
        if strategy not in (BOUNDED, TWO_PASS):
            raise ValueError(f"unknown sampling strategy {strategy!r}; use {AUTO!r}, {BOUNDED!r} or {TWO_PASS!r}")
        return strategy

    def _quota_rule(self) -> functools.partial:
        # A plain function of the counts, so the closure pickled to workers holds no transform.
        s = self.settings
        return functools.partial(compute_quotas, nb_samples=s.nb_samples, nb_samples_per_stream=s.nb_samples_per_stream,
                weighted=s.weighted,
                                 seed=s.seed)

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        if self.settings.one_media_per_occurrence:
            records = records | "OneMediaPerOccurrence" >> OneMediaPerOccurrence(self.settings.seed)
        if self.strategy == BOUNDED:
            selected, figures = self._bounded(records)
        else:
            selected, figures = self._keyed(records)
        s = self.settings
        self.stream_stats = figures | "StreamStats" >> beam.ParDo(_ReportStreams(s.nb_samples, s.nb_samples_per_stream, s.weighted))
        return selected

    def _bounded(self, records: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        s = self.settings
        outcome = records | "BoundedSample" >> beam.CombineGlobally(BoundedBalancedSampleFn(s.nb_samples, s.nb_samples_per_stream, s.seed))
        selected = outcome | "Selected" >> beam.FlatMap(lambda result: result[2]).with_output_types(MediaRecord)
        return selected, outcome | "Figures" >> beam.Map(outcome_figures)

    def _keyed(self, records: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        availability = records | "CountPerStream" >> _CountPerStream()
        if self.settings.weighted and self._stream_sizes is not None:
            sizes = beam.pvalue.AsSingleton(self._stream_sizes)
            quotas = availability | "ComputeQuotas" >> beam.Map(_quotas_weighted_by_sizes, sizes=sizes, rule=self._quota_rule())
        else:
            quotas = availability | "ComputeQuotas" >> beam.Map(self._quota_rule())
        if self.strategy == TWO_PASS:
            held = records | "HoldUntilQuotas" >> HoldOnDisk(self.settings.scratch_dir, MediaRecordCoder(), until=quotas)
            selected = held | "KeepQuotas" >> _KeepLowestPerStream(self.settings.seed, quotas=quotas)
        elif self.strategy == CAP_ONLY:
            # A cap alone needs no counts: min(available, cap) is the lowest `cap` ranks.
            selected = records | "KeepCap" >> _KeepLowestPerStream(self.settings.seed, fixed_quota=self.settings.nb_samples_per_stream)
        else:
            selected = records  # everything: no shuffle beyond the optional one-media step
        selected_counts = availability if selected is records else selected | "CountSelected" >> _CountPerStream()
        figures = selected_counts | "Figures" >> beam.Map(
            lambda counts, available, quota: (counts, available, quota),
            available=beam.pvalue.AsSingleton(availability),
            quota=beam.pvalue.AsSingleton(quotas),
        )
        return selected, figures
