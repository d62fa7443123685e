"""ReadOccurrenceMedia: a GBIF occurrence search → one MediaRecord per media item of the requested type.

    records = pipeline | ReadOccurrenceMedia(query={"speciesKey": ["5352251"]}, api_url=api.base_url)

The graph (no network I/O at construction; the planner runs inside the pipeline):

    seed element → PlanReads (counts, quotas, pages; one ReadPlan element)
                 → PageRequests → Reshuffle → FetchPages (pages in parallel; records + page stats)
                 → TopUp 1..n (further pages for streams still short, from the stats so far) → FetchPages
                 → ReportShortStreams (counter + log)
    Flatten of every round's records → PCollection[MediaRecord] (source="api")
    ReadPlan → StreamSizes: ``ReadOccurrenceMedia.stream_sizes``, a singleton {stream: GBIF's count}
               for SampleStreams' weighted quotas (the records read do not weigh the streams)

Deduplication by URL is FilterMedia's job, sampling SampleStreams'.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_gbif import DEFAULT_USER_AGENT, METRICS_NAMESPACE, NOTICE
from beam_gbif.core.occurrence_fields import check_extra_fields
from beam_gbif.core.query import validate_query
from beam_gbif.core.records import DEFAULT_LABEL_FIELD, DEFAULT_MEDIA_TYPE
from beam_gbif.io.gbif.client import DEFAULT_GBIF_API_URL, GbifClient
from beam_gbif.io.gbif.planner import plan_reads
from beam_gbif.io.gbif.planning import DEFAULT_MARGIN, PageRequest, PageStat, ReadPlan, stream_label
from beam_gbif.transforms.live_bars import tick
from beam_gbif.transforms.sources.media_items import media_records

_log = logging.getLogger(__name__)

API_PAGES_READ = "api_pages_read"
API_OCCURRENCES_READ = "api_occurrences_read"
API_RECORDS = "api_records"
API_RETRIES = "api_retries"
API_PLANNING_REQUESTS = "api_planning_requests"
API_TOP_UP_PAGES = "api_top_up_pages"
API_STREAMS_SHORT = "api_streams_short"

_STATS = "page_stats"
_MAX_LOGGED_SHORT = 20
_PLAN_LINES_SHOWN = 16


@dataclasses.dataclass(frozen=True)
class ApiReadSettings:
    """The occurrence search source; a small picklable value the DoFns share (not the transform).

    ``query`` maps GBIF search parameters to a value or a list of values (OR); it is validated
    here (unknown field → OptionError naming it and close matches). ``label_field`` and
    ``stream_fields`` name occurrence fields; ``nb_samples``, ``nb_samples_per_stream`` and
    ``weighted`` are the sampling options the read planner reads enough pages for
    (``read_margin`` more, ``top_up_rounds`` rounds for streams that run short).
    ``one_media_per_occurrence``: keep one media of each occurrence (seeded by ``seed``).
    ``licenses``: codes to keep (empty: all). The rest: the API client's limits.
    """

    query: Mapping[str, Sequence[str] | str] = dataclasses.field(default_factory=dict)
    api_url: str = DEFAULT_GBIF_API_URL
    user_agent: str = DEFAULT_USER_AGENT
    label_field: str = DEFAULT_LABEL_FIELD
    stream_fields: tuple[str, ...] = ()
    media_type: str = DEFAULT_MEDIA_TYPE
    nb_samples: int | None = None
    nb_samples_per_stream: int | None = None
    weighted: bool = False
    one_media_per_occurrence: bool = True
    licenses: frozenset[str] = frozenset()
    seed: int = 0
    read_margin: float = DEFAULT_MARGIN
    top_up_rounds: int = 2
    api_concurrency: int = 4
    max_retries: int = 5
    timeout: tuple[float, float] = (10.0, 60.0)
    extra_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "query", validate_query(self.query or {}, media_type=self.media_type))
        object.__setattr__(self, "extra_fields", check_extra_fields(self.extra_fields, source="api"))
        object.__setattr__(self, "stream_fields", tuple(self.stream_fields))
        object.__setattr__(self, "licenses", frozenset(self.licenses))
        object.__setattr__(self, "timeout", tuple(self.timeout))

    @property
    def one_media_seed(self) -> int | None:
        return self.seed if self.one_media_per_occurrence else None

    def client(self) -> GbifClient:
        return GbifClient(self.api_url, self.user_agent, timeout=self.timeout, max_retries=self.max_retries,
                          max_concurrency=self.api_concurrency)

    def plan(self, client: GbifClient | None = None) -> ReadPlan:
        return plan_reads(client or self.client(), self.query, stream_fields=self.stream_fields, nb_samples=self.nb_samples,
                          nb_samples_per_stream=self.nb_samples_per_stream, weighted=self.weighted, seed=self.seed,
                          margin=self.read_margin)


class _PlanReadsFn(beam.DoFn):
    """Runs the planner once, from the single seed element."""

    def __init__(self, settings: ApiReadSettings) -> None:
        self._settings = settings
        self._planning_requests = Metrics.counter(METRICS_NAMESPACE, API_PLANNING_REQUESTS)

    def process(self, _seed: Any) -> Iterable[ReadPlan]:
        plan = self._settings.plan()
        self._planning_requests.inc(plan.planning_requests)
        lines = plan.describe().splitlines()
        # A plan has one line per stream: a person sees the first ones, --log_level info shows them all.
        for number, line in enumerate(lines):
            _log.log(NOTICE if number < _PLAN_LINES_SHOWN else logging.INFO, "%s", line)
        if len(lines) > _PLAN_LINES_SHOWN:
            _log.log(NOTICE, "  ... %d more line(s) of the plan at --log_level info", len(lines) - _PLAN_LINES_SHOWN)
        yield plan


class _FetchPagesFn(beam.DoFn):
    """Reads search pages; emits MediaRecords and, tagged, one PageStat per page."""

    def __init__(self, settings: ApiReadSettings) -> None:
        self._settings = settings
        self._client: GbifClient | None = None
        self._pages = Metrics.counter(METRICS_NAMESPACE, API_PAGES_READ)
        self._occurrences = Metrics.counter(METRICS_NAMESPACE, API_OCCURRENCES_READ)
        self._records = Metrics.counter(METRICS_NAMESPACE, API_RECORDS)
        self._retries = Metrics.counter(METRICS_NAMESPACE, API_RETRIES)
        self._drops: dict[str, Any] = {}

    def setup(self) -> None:
        self._client = self._settings.client()

    def process(self, page: PageRequest) -> Iterable[Any]:
        retries_before = self._client.retries
        results = self._client.search(page.search_params()).get("results") or []
        self._retries.inc(self._client.retries - retries_before)
        self._pages.inc()
        self._occurrences.inc(len(results))
        tick("reading GBIF", len(results), "occurrences")
        usable = 0
        dropped_on_page: Counter = Counter()
        settings = self._settings
        for occurrence in results:
            records, dropped = media_records(occurrence, occurrence.get("media") or [], label_field=settings.label_field,
                                             stream_fields=settings.stream_fields, media_type=settings.media_type, source="api",
                                             licenses=settings.licenses, one_media_seed=settings.one_media_seed,
                                             extra_fields=settings.extra_fields)
            dropped_on_page.update(dropped)
            usable += len(records)
            yield from records
        # Counters once per page, not per occurrence.
        self._records.inc(usable)
        for name, count in dropped_on_page.items():
            self._drop_counter(name).inc(count)
        yield beam.pvalue.TaggedOutput(_STATS, PageStat(page.page_id, len(results), usable))

    def _drop_counter(self, name: str):
        if name not in self._drops:
            self._drops[name] = Metrics.counter(METRICS_NAMESPACE, name)
        return self._drops[name]

    def teardown(self) -> None:
        if self._client is not None:
            self._client.close()


class _TopUpFn(beam.DoFn):
    """Further page requests for the streams the reads so far left short."""

    def __init__(self) -> None:
        self._top_up_pages = Metrics.counter(METRICS_NAMESPACE, API_TOP_UP_PAGES)

    def process(self, plan: ReadPlan, stats: list[PageStat]) -> Iterable[PageRequest]:
        pages = plan.top_up(stats)
        self._top_up_pages.inc(len(pages))
        yield from pages


class _ReportShortStreamsFn(beam.DoFn):
    def __init__(self) -> None:
        self._short = Metrics.counter(METRICS_NAMESPACE, API_STREAMS_SHORT)

    def process(self, plan: ReadPlan, stats: list[PageStat]) -> Iterable[Any]:
        short = plan.shortfalls(stats)
        self._short.inc(len(short))
        for stream, (usable, quota) in list(short.items())[:_MAX_LOGGED_SHORT]:
            _log.warning("GBIF API stream %s is short: %d usable record(s) read for a planned quota of %d",
                         stream_label(stream), usable, quota)
        if len(short) > _MAX_LOGGED_SHORT:
            _log.warning("... and %d more short streams", len(short) - _MAX_LOGGED_SHORT)
        return []


class ReadOccurrenceMedia(beam.PTransform):
    """The occurrence search API source; see the module docstring.

    ``query`` maps GBIF search parameters to a value or a list of values (OR); it is
    validated at construction (unknown field → OptionError naming it and close matches).
    """

    def __init__(self, settings: ApiReadSettings = ApiReadSettings()) -> None:
        super().__init__()
        self.settings = settings
        self.top_up_rounds = settings.top_up_rounds
        # Set once the transform is applied: a singleton {stream: size} (ReadPlan.stream_sizes).
        self.stream_sizes: beam.PCollection | None = None

    def plan(self, client: GbifClient | None = None) -> ReadPlan:
        """The read plan (counts and facet calls only, no pages): what --dry_run prints via ``.describe()``."""
        return self.settings.plan(client)

    def describe_plan(self) -> str:
        return self.plan().describe()

    def _fetch(self, pages: beam.PCollection, name: str) -> tuple[beam.PCollection, beam.PCollection]:
        fetched = (
            pages
            | f"Reshuffle{name}" >> beam.Reshuffle()
            | f"Fetch{name}" >> beam.ParDo(_FetchPagesFn(self.settings)).with_outputs(_STATS, main="records")
        )
        return fetched.records, fetched[_STATS]

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        plan = pbegin | "Seed" >> beam.Create([None]) | "PlanReads" >> beam.ParDo(_PlanReadsFn(self.settings))
        self.stream_sizes = plan | "StreamSizes" >> beam.Map(lambda read_plan: read_plan.stream_sizes())
        pages = plan | "PageRequests" >> beam.FlatMap(lambda read_plan: read_plan.page_requests())
        records, stats = self._fetch(pages, "Pages")
        all_records, all_stats = [records], [stats]
        for round_number in range(1, self.top_up_rounds + 1):
            stats_so_far = tuple(all_stats) | f"StatsBeforeTopUp{round_number}" >> beam.Flatten()
            more = plan | f"TopUp{round_number}" >> beam.ParDo(_TopUpFn(), beam.pvalue.AsList(stats_so_far))
            records, stats = self._fetch(more, f"TopUp{round_number}")
            all_records.append(records)
            all_stats.append(stats)
        final_stats = tuple(all_stats) | "AllPageStats" >> beam.Flatten()
        _ = plan | "ReportShortStreams" >> beam.ParDo(_ReportShortStreamsFn(), beam.pvalue.AsList(final_stats))
        return tuple(all_records) | "AllRecords" >> beam.Flatten()
