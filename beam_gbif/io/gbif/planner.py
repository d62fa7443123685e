"""The read planner: count the streams of a query with cheap facet calls, size quotas, partition
streams over the offset cap, and return a ``ReadPlan`` (planning.py, whose docstring says how)."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence

from beam_gbif.core.query import search_parameter_for_field
from beam_gbif.core.quotas import compute_quotas
from beam_gbif.io.gbif.client import GbifApiError, GbifClient
from beam_gbif.io.gbif.planning import (
    DEFAULT_MARGIN,
    MIN_EXTRA_READS,
    NUMERIC_FIELDS,
    OFFSET_CAP,
    PARTITION_FIELDS,
    ReadPlan,
    Segment,
    Stream,
    StreamPlan,
    freeze_params,
    stream_label,
)

_log = logging.getLogger(__name__)


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
        groups = group_values(field, counts, constrained=field in params)
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


def group_values(field: str, counts: Mapping[str, int], constrained: bool) -> list[tuple[list[str], int]]:
    """Values of ``field`` grouped into filters of at most OFFSET_CAP occurrences each (a value over it stands alone).

    Numeric fields give contiguous ranges (``1990,1999``), unless the query already restricts
    the field (a range could then widen it): explicit value lists, OR-ed, like other fields.
    """
    if field in NUMERIC_FIELDS:
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
    if field in NUMERIC_FIELDS and not constrained:
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
