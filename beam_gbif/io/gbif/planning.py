"""Read planning for the occurrence search API: count streams, size quotas, pick the pages to read.

``plan_reads`` makes only cheap calls (one facet call per combination of the other stream
fields, plus facet calls to partition streams over the offset cap) and returns a ``ReadPlan``:

1. streams are the combinations of the ``stream_fields`` values: the query's values for a
   field the query restricts, else the values a facet call discovers; each gets its count;
2. quotas come from ``beam_gbif.core.quotas.compute_quotas`` over those counts (the same rule
   the in-pipeline sampler applies to what is read; weighted quotas follow these counts there
   too: ``ReadPlan.stream_sizes()`` reaches the sampler, what was read only bounds them);
3. a stream whose quota is smaller than its count is read at seeded random page offsets, only
   as many pages as ``quota × (1 + margin)`` occurrences need (the margin covers occurrences
   that lose their media to type, URL or licence filters), weighted or not; otherwise it is
   read entirely;
4. a stream over the 100,000 offset cap is split into segments by ``year`` ranges (then
   ``month``, dataset, country, ...; recursively) so every record stays reachable; logged;
5. after a round of reads, ``ReadPlan.top_up(stats)`` re-estimates each stream's usable
   availability from what was read and returns the further pages short streams need;
   ``ReadPlan.shortfalls(stats)`` names the streams still short after the last round.

Exactness does not depend on the plan: the sampler selects exactly from what was read. The
plan only decides how little can be read while every quota is still reachable.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from beam_gbif.core.hashing import seeded_hash, stream_text
from beam_gbif.core.quotas import compute_quotas

_log = logging.getLogger(__name__)

PAGE_SIZE = 300
OFFSET_CAP = 100_000  # offset + limit may not exceed it: the first OFFSET_CAP records of a query are reachable
DEFAULT_MARGIN = 0.25
MIN_EXTRA_READS = 20  # small quotas lose proportionally more to chance: read at least this many extra
PARTITION_FIELDS: tuple[str, ...] = ("year", "month", "datasetKey", "country", "basisOfRecord", "publishingOrg", "day")
NUMERIC_FIELDS = frozenset({"year", "month", "day"})
_PAGE_ORDER_PURPOSE = "read-plan-page-order"

Stream = tuple[str, ...]
Params = tuple[tuple[str, tuple[str, ...]], ...]  # hashable, ordered search filters


def freeze_params(params: Mapping[str, Sequence[str] | str]) -> Params:
    return tuple(sorted((name, tuple([v] if isinstance(v, str) else v)) for name, v in params.items()))


def thaw_params(params: Params) -> dict[str, list[str]]:
    return {name: list(values) for name, values in params}


@dataclasses.dataclass(frozen=True)
class Segment:
    """A part of a stream reachable within the offset cap: its filters and count."""

    params: Params
    count: int
    description: str = ""


@dataclasses.dataclass(frozen=True)
class PageRequest:
    """One search page to read: an element of the pipeline."""

    stream: Stream
    params: Params
    offset: int
    limit: int
    segment: int = 0

    @property
    def page_id(self) -> tuple[Stream, int, int]:
        return self.stream, self.segment, self.offset

    def search_params(self) -> dict[str, Any]:
        return {**thaw_params(self.params), "limit": self.limit, "offset": self.offset}


@dataclasses.dataclass(frozen=True)
class PageStat:
    """What reading one page gave: occurrences, and usable units (records the sampler can select)."""

    page_id: tuple[Stream, int, int]  # PageRequest.page_id: (stream, segment, offset)
    occurrences: int
    usable: int

    @property
    def stream(self) -> Stream:
        return self.page_id[0]


@dataclasses.dataclass
class StreamPlan:
    stream: Stream
    count: int
    quota: int
    target_reads: int  # occurrences to read in the first round
    segments: list[Segment]

    @property
    def reads_everything(self) -> bool:
        return self.target_reads >= self.count

    def total_pages(self) -> int:
        return sum(math.ceil(segment.count / PAGE_SIZE) for segment in self.segments)

    def ranked_pages(self, seed: int) -> list[PageRequest]:
        """Every page of the stream, in the order they are read: seeded random, or natural when reading everything."""
        pages = [
            PageRequest(self.stream, segment.params, offset, min(PAGE_SIZE, segment.count - offset), index)
            for index, segment in enumerate(self.segments)
            for offset in range(0, segment.count, PAGE_SIZE)
        ]
        if self.reads_everything:
            return pages
        name = stream_text(self.stream)
        return sorted(pages, key=lambda p: seeded_hash(seed, f"{name}|{p.segment}|{p.offset}", purpose=_PAGE_ORDER_PURPOSE))

    def first_pages(self, seed: int) -> list[PageRequest]:
        """The shortest prefix of ranked_pages() holding target_reads occurrences."""
        chosen, total = [], 0
        for page in self.ranked_pages(seed):
            if total >= self.target_reads:
                break
            chosen.append(page)
            total += page.limit
        return chosen


@dataclasses.dataclass
class ReadPlan:
    """Streams, counts, quotas and pages to read; picklable (a pipeline element)."""

    query: dict[str, list[str]]
    stream_fields: tuple[str, ...]
    streams: list[StreamPlan]
    nb_samples: int | None
    nb_samples_per_stream: int | None
    weighted: bool
    seed: int
    margin: float
    planning_requests: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)
    counted: bool = True  # False when the stream fields could not be counted (then everything is read)

    def stream_sizes(self) -> dict[Stream, int]:
        """Each stream's size as GBIF counts it for the query ({} when the streams could not be counted).

        Weighted quotas follow these, not what was read: a stream is read in proportion to its
        quota, not to its size, so the records read do not weigh the streams.
        """
        return {stream.stream: stream.count for stream in self.streams} if self.counted else {}

    def page_requests(self) -> list[PageRequest]:
        """The first round of reads."""
        return [page for stream in self.streams for page in stream.first_pages(self.seed)]

    def minimum_requests(self) -> int:
        """Fewest search pages any reader needs for the quotas (each stream filtered separately, 300 per page)."""
        return sum(math.ceil(stream.quota / PAGE_SIZE) for stream in self.streams)

    # -- later rounds ----------------------------------------------------------------------

    def _progress(self, stats: Sequence[PageStat]) -> dict[Stream, tuple[int, int, int]]:
        """Per stream: (pages read, occurrences read, usable units read), each page counted once."""
        seen: dict[tuple, PageStat] = {}
        for stat in stats:
            seen.setdefault(stat.page_id, stat)
        progress = {stream.stream: (0, 0, 0) for stream in self.streams}
        for stat in seen.values():
            pages, occurrences, usable = progress.get(stat.stream, (0, 0, 0))
            progress[stat.stream] = (pages + 1, occurrences + stat.occurrences, usable + stat.usable)
        return progress

    def _targets(self, progress: Mapping[Stream, tuple[int, int, int]]) -> dict[Stream, int]:
        """Quotas recomputed over the usable availability estimated from what was read."""
        estimated = {}
        for stream in self.streams:
            pages, occurrences, usable = progress[stream.stream]
            if pages >= stream.total_pages() or not occurrences:
                estimated[stream.stream] = usable if pages >= stream.total_pages() else stream.count
            else:
                estimated[stream.stream] = round(stream.count * usable / occurrences)
        # Weighted by the counts, as the sampler weighs them: the targets are the quotas it will compute.
        return compute_quotas(estimated, nb_samples=self.nb_samples, nb_samples_per_stream=self.nb_samples_per_stream,
                              weighted=self.weighted, seed=self.seed, weights={s.stream: s.count for s in self.streams})

    def top_up(self, stats: Sequence[PageStat]) -> list[PageRequest]:
        """Further pages for the streams whose usable reads fall short of their re-estimated quota.

        Stateless: ``stats`` holds one PageStat per page read so far (every round), and the
        next pages are the first unread ones of each stream's seeded page order.
        """
        progress = self._progress(stats)
        targets = self._targets(progress)
        read_ids = {stat.page_id for stat in stats}
        pages: list[PageRequest] = []
        for stream in self.streams:
            read_pages, occurrences, usable = progress[stream.stream]
            # One unit above the target leaves room for the sampler's seeded leftover units.
            needed = min(targets[stream.stream] + 1, stream.count) - usable
            if needed <= 0 or read_pages >= stream.total_pages():
                continue
            usable_per_occurrence = max(usable / occurrences, 0.05) if occurrences else 1.0
            extra_reads = math.ceil(needed / usable_per_occurrence * (1 + self.margin))
            added, added_reads = [], 0
            for page in stream.ranked_pages(self.seed):
                if added_reads >= extra_reads:
                    break
                if page.page_id not in read_ids:
                    added.append(page)
                    added_reads += page.limit
            pages.extend(added)
            _log.info("read plan: stream %s has %d usable of %d needed after %d page(s); reading %d more page(s)",
                      stream_label(stream.stream), usable, needed + usable, read_pages, len(added))
        return pages

    def shortfalls(self, stats: Sequence[PageStat]) -> dict[Stream, tuple[int, int]]:
        """Streams whose usable reads are below their planned quota: stream → (usable read, quota).

        Without sampling options nothing was asked per stream, so nothing can be short.
        """
        if self.nb_samples is None and self.nb_samples_per_stream is None:
            return {}
        progress = self._progress(stats)
        return {s.stream: (progress[s.stream][2], s.quota) for s in self.streams if progress[s.stream][2] < s.quota}

    # -- reporting -------------------------------------------------------------------------

    def describe(self, max_streams: int = 50) -> str:
        """A human-readable plan (for --dry_run): streams, counts, quotas, pages and requests."""
        fields = ",".join(self.stream_fields) or "(none: one stream)"
        first_pages = {stream.stream: stream.first_pages(self.seed) for stream in self.streams}
        first_round = sum(len(pages) for pages in first_pages.values())
        lines = [
            f"GBIF read plan: query {self.query}",
            f"  streams by {fields}: {len(self.streams)}; occurrences matching: {sum(s.count for s in self.streams):,}",
            f"  sampling: nb_samples={self.nb_samples} nb_samples_per_stream={self.nb_samples_per_stream} "
            f"weighted={self.weighted} seed={self.seed}; read margin {self.margin:.0%}",
            f"  requests: {self.planning_requests} planning call(s) made; {first_round} search page(s) to read "
            f"(minimum possible {self.minimum_requests()}); more only for streams that come up short",
            "  stream | count | quota | occurrences to read | pages | segments",
        ]
        for stream in self.streams[:max_streams]:
            first = first_pages[stream.stream]
            to_read = sum(page.limit for page in first)
            mode = "all" if to_read >= stream.count else "random pages"
            lines.append(f"  {stream_label(stream.stream)} | {stream.count:,} | {stream.quota:,} | {to_read:,} ({mode}) | "
                         f"{len(first)} | {len(stream.segments)}")
        if len(self.streams) > max_streams:
            lines.append(f"  ... and {len(self.streams) - max_streams} more streams")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def stream_label(stream: Stream) -> str:
    return "/".join(stream) if stream else "(all)"
