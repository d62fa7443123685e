"""FilterMedia: keep records of usable licences, and one record per URL."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_gbif import METRICS_NAMESPACE
from beam_gbif.core.errors import OptionError
from beam_gbif.core.licenses import KNOWN_LICENSE_CODES
from beam_gbif.core.records import MediaRecord
from beam_gbif.transforms.coders import MediaRecordCoder
from beam_gbif.transforms.sources.media_items import EXCLUDED_BY_LICENSE
from beam_gbif.transforms.spill import GroupByKeyOnDisk

DUPLICATE_URLS = "duplicate_urls"


@dataclasses.dataclass(frozen=True)
class FilterSettings:
    """``licenses``: normalised licence codes to keep (empty: every licence); ``scratch_dir``: the
    local runners' spill folder for the URL de-duplication (None: a plain GroupByKey)."""

    licenses: frozenset[str] = frozenset()
    scratch_dir: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "licenses", frozenset(self.licenses))
        unknown = sorted(code for code in self.licenses if code not in KNOWN_LICENSE_CODES)
        if unknown:
            raise OptionError(f"--licenses: unknown licence code(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_LICENSE_CODES))}")


class _KeepLicenses(beam.DoFn):
    def __init__(self, allowed: frozenset[str]):
        self._allowed = allowed
        self._excluded = Metrics.counter(METRICS_NAMESPACE, EXCLUDED_BY_LICENSE)

    def process(self, record: MediaRecord) -> Iterable[MediaRecord]:
        if record.license_code in self._allowed:
            yield record
        else:
            self._excluded.inc()


def _lowest_occurrence(records: Iterable[MediaRecord]) -> MediaRecord:
    # Ties on the occurrence key are broken on the whole record, so the pick never depends
    # on the order a runner delivers the duplicates in.
    return min(records, key=lambda r: (r.occurrence_key, repr(r)))


class _CountDuplicates(beam.DoFn):
    def __init__(self) -> None:
        self._duplicates = Metrics.counter(METRICS_NAMESPACE, DUPLICATE_URLS)

    def process(self, keyed: tuple[str, list[MediaRecord]]) -> Iterable[MediaRecord]:
        _, records = keyed
        records = list(records)
        if len(records) > 1:
            self._duplicates.inc(len(records) - 1)
        yield _lowest_occurrence(records)


class DeduplicateUrls(beam.PTransform):
    """Identical URLs are one file: keep the record with the lowest occurrence key.

    With a ``scratch_dir`` (local runners) the grouping spills to disk, so memory does not grow with the input.
    """

    def __init__(self, scratch_dir: str | None = None):
        super().__init__()
        self._group_by_url = GroupByKeyOnDisk(scratch_dir, value_coder=MediaRecordCoder())

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        keyed = records | "KeyByUrl" >> beam.Map(lambda r: (r.url, r))
        return keyed | "GroupByUrl" >> self._group_by_url | "KeepLowestOccurrence" >> beam.ParDo(_CountDuplicates())


class FilterMedia(beam.PTransform):
    """Licence filter (when ``licenses`` is given), then URL de-duplication.

    The GBIF sources already apply the licence filter (media_items.media_records), because
    their one-media-per-occurrence pick must choose among usable licences only; here it is
    the guarantee for every source (a URL list included), a set lookup per record.
    """

    def __init__(self, settings: FilterSettings = FilterSettings()):
        super().__init__()
        self._licenses = settings.licenses
        self._scratch_dir = settings.scratch_dir

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        if self._licenses:
            records = records | "KeepLicenses" >> beam.ParDo(_KeepLicenses(self._licenses))
        return records | "DeduplicateUrls" >> DeduplicateUrls(self._scratch_dir)
