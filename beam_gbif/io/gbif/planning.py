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
from beam_gbif.core.query import search_parameter_for_field
from beam_gbif.core.quotas import compute_quotas
from beam_gbif.io.gbif.client import GbifApiError, GbifClient

_log = logging.getLogger(__name__)

PAGE_SIZE = 300
OFFSET_CAP = 100_000  # offset + limit may not exceed it: the first OFFSET_CAP records of a query are reachable
DEFAULT_MARGIN = 0.25
MIN_EXTRA_READS = 20  # small quotas lose proportionally more to chance: read at least this many extra
PARTITION_FIELDS: tuple[str, ...] = ("year", "month", "datasetKey", "country", "basisOfRecord", "publishingOrg", "day")
_NUMERIC_FIELDS = frozenset({"year", "month", "day"})
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


class _Planner:
    def __init__(self, client: GbifClient, query: Mapping[str, list[str]]) -> None:
        self.client = client
        self.query = {name: list(values) for name, values in query.items()}
        self.notes: list[str] = []
        self._requests_before = client.requests_made

    @property
    def requests(self) -> int:
        """Requests (retries included) the client made since planning started."""
        return self.client.requests_made - self._requests_before

    # -- streams ---------------------------------------------------------------------------

    def stream_counts(self, parameters: Sequence[str]) -> dict[Stream, int]:
        """Count of every combination of the values of ``parameters`` (search parameter names) that has occurrences.

        Values come from the query, or for a field the query leaves open from one facet call.
        The field with the most values is then counted by one facet call per combination of
        the others: 1,200 species × 2 datasets cost 2 calls (+1 to discover the datasets).
        Empty combinations are left out: the sampler never sees them, so they must not
        count in the quotas (``nb_samples=-1`` would otherwise be 0 everywhere).
        """
        if not parameters:
            return {(): self.client.count(self.query)}
        values: dict[str, list[str]] = {}
        discovered: dict[str, dict[str, int]] = {}
        for parameter in parameters:
            if parameter in self.query:
                values[parameter] = list(self.query[parameter])
            else:
                discovered[parameter] = self.client.facet_counts(self.query, parameter)
                values[parameter] = sorted(discovered[parameter])
        if len(parameters) == 1 and parameters[0] in discovered:
            return {(value,): n for value, n in discovered[parameters[0]].items() if n > 0}
        order = sorted(range(len(parameters)), key=lambda i: len(values[parameters[i]]))
        counts: dict[Stream, int] = {}
        self._count_combinations(dict(self.query), [parameters[i] for i in order], values, (), counts)
        # Back to the order of the stream fields.
        return {tuple(combination[order.index(i)] for i in range(len(parameters))): n for combination, n in counts.items()}

    def _count_combinations(self, params: dict[str, list[str]], fields: list[str], values: Mapping[str, list[str]], prefix: Stream,
                            out: dict[Stream, int]) -> None:
        field, rest = fields[0], fields[1:]
        if not rest:
            found = self.client.facet_counts(params, field)
            for value in values[field]:
                if found.get(value, 0) > 0:
                    out[prefix + (value,)] = found[value]
            return
        for value in values[field]:
            self._count_combinations({**params, field: [value]}, rest, values, prefix + (value,), out)

    # -- offset cap ------------------------------------------------------------------------

    def segments(self, params: dict[str, list[str]], count: int, label: str) -> list[Segment]:
        """``params`` split into parts of at most OFFSET_CAP occurrences (recursively)."""
        if count <= OFFSET_CAP:
            return [Segment(freeze_params(params), count)]
        best: tuple[int, str, dict[str, int]] | None = None
        for field in PARTITION_FIELDS:
            if len(params.get(field, ())) == 1:
                continue
            counts = self.client.facet_counts(params, field)
            if len(counts) < 2:
                continue
            covered = sum(counts.values())
            if best is None or covered > best[0]:
                best = (covered, field, counts)
            if covered >= count:
                break
        if best is None:
            self.notes.append(f"stream {label}: {count:,} occurrences but no facet splits it; only the first {OFFSET_CAP:,} are reachable")
            _log.warning("read plan: %s", self.notes[-1])
            return [Segment(freeze_params(params), OFFSET_CAP, "first 100,000 only")]
        covered, field, counts = best
        groups = _group_values(field, counts, constrained=field in params)
        note = (f"stream {label}: {count:,} occurrences exceed the {OFFSET_CAP:,} offset cap; "
                f"partitioned by {field} into {len(groups)} part(s)")
        if covered < count:
            note += f" ({count - covered:,} occurrences without a {field} value stay unreachable)"
        self.notes.append(note)
        _log.info("read plan: %s", note)
        segments: list[Segment] = []
        for values, group_count in groups:
            part = {**params, field: values}
            for segment in self.segments(part, group_count, f"{label} {field}={','.join(values)}"):
                description = f"{field}={'|'.join(values)}" + (f" {segment.description}" if segment.description else "")
                segments.append(dataclasses.replace(segment, description=description))
        return segments


def _group_values(field: str, counts: Mapping[str, int], constrained: bool) -> list[tuple[list[str], int]]:
    """Values of ``field`` grouped into filters of at most OFFSET_CAP occurrences each (a value over it stands alone).

    Numeric fields give contiguous ranges (``1990,1999``), unless the query already restricts
    the field (a range could then widen it): explicit value lists, OR-ed, like other fields.
    """
    if field in _NUMERIC_FIELDS:
        ordered = sorted(counts.items(), key=lambda item: int(item[0]))
    else:
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    groups: list[tuple[list[str], int]] = []
    current: list[str] = []
    total = 0
    for value, n in ordered:
        if current and total + n > OFFSET_CAP:
            groups.append((current, total))
            current, total = [], 0
        current.append(value)
        total += n
    if current:
        groups.append((current, total))
    if field in _NUMERIC_FIELDS and not constrained:
        return [([f"{values[0]},{values[-1]}"] if len(values) > 1 else values, n) for values, n in groups]
    return groups


def plan_reads(
    client: GbifClient,
    query: Mapping[str, list[str]],
    *,
    stream_fields: Sequence[str] = (),
    nb_samples: int | None = None,
    nb_samples_per_stream: int | None = None,
    weighted: bool = False,
    seed: int = 0,
    margin: float = DEFAULT_MARGIN,
) -> ReadPlan:
    """Plans the reads of ``query`` (validated search parameters, see query.validate_query); see the module docstring."""
    planner = _Planner(client, query)
    parameters = [search_parameter_for_field(field) for field in stream_fields]
    planned_fields = tuple(stream_fields)
    uncountable = ""  # why the streams cannot be counted before reading, if they cannot
    if any(p is None for p in parameters):
        unknown = [f for f, p in zip(stream_fields, parameters, strict=True) if p is None]
        uncountable = (f"split_streams_by field(s) {', '.join(unknown)} are not GBIF search parameters: streams cannot be "
                       "counted before reading, so ")
    else:
        try:
            counts = planner.stream_counts(parameters)
        except GbifApiError as exc:
            if exc.status != 400 or not parameters:
                raise
            # A search parameter GBIF cannot facet on (e.g. eventDate).
            uncountable = f"split_streams_by field(s) {', '.join(stream_fields)} cannot be counted by facets ({exc}); "
    if uncountable:
        planner.notes.append(uncountable + "every matching occurrence is read and the sampler balances what it gets")
        _log.warning("read plan: %s", planner.notes[-1])
        parameters, planned_fields = [], ()
        nb_samples = nb_samples_per_stream = None
        counts = planner.stream_counts([])
    quotas = compute_quotas(counts, nb_samples=nb_samples, nb_samples_per_stream=nb_samples_per_stream, weighted=weighted, seed=seed)
    streams = []
    for stream, count in counts.items():
        quota = quotas[stream]
        if quota >= count:
            target = count
        else:
            target = min(count, math.ceil(quota * (1 + margin)) + MIN_EXTRA_READS)
        params = dict(planner.query)
        for parameter, value in zip(parameters, stream, strict=True):
            params[parameter] = [value]
        segments = planner.segments(params, count, stream_label(stream)) if count else []
        streams.append(StreamPlan(stream, count, quota, target, segments))
    plan = ReadPlan(
        query=dict(planner.query), stream_fields=planned_fields, streams=streams, nb_samples=nb_samples,
        nb_samples_per_stream=nb_samples_per_stream, weighted=weighted, seed=seed, margin=margin,
        planning_requests=planner.requests, notes=planner.notes, counted=not uncountable,
    )
    _log.info("read plan: %d stream(s), %d page(s) in the first round, %d planning request(s)",
              len(streams), sum(len(s.first_pages(seed)) for s in streams), planner.requests)
    return plan
