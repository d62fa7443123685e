"""Mergeable, deterministic "keep the lowest ranks" combiners used by SampleStreams.

Beam's Sample/Top use the unseeded global ``random``; these rank every record by a seeded
hash of its URL, so the kept set depends only on (seed, records), never on bundle order,
worker count or runner. Ties on the 64-bit rank (vanishingly rare) are broken on the URL.
"""

from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam

from beam_gbif.records import MediaRecord
from beam_gbif.sampling_hash import seeded_hash

# Independent purposes: the media an occurrence keeps must not bias which occurrences a
# stream keeps (with one hash, occurrences with many media would win more often).
ONE_MEDIA_PURPOSE = "one-media-per-occurrence"
STREAM_SAMPLE_PURPOSE = "stream-sample"

Ranked = tuple[int, str, MediaRecord]  # (rank, url, record): url breaks rank ties


def ranked(record: MediaRecord, seed: int, purpose: str) -> Ranked:
    return seeded_hash(seed, record.url, purpose=purpose), record.url, record


def _order(item: Ranked) -> tuple[int, str]:
    return item[0], item[1]


class LowestRankedFn(beam.CombineFn):
    """Per key, the one record of lowest rank (one media per occurrence)."""

    def __init__(self, seed: int, purpose: str = ONE_MEDIA_PURPOSE):
        super().__init__()
        self._seed = seed
        self._purpose = purpose

    def create_accumulator(self) -> Ranked | None:
        return None

    def add_input(self, best: Ranked | None, record: MediaRecord) -> Ranked:
        candidate = ranked(record, self._seed, self._purpose)
        return candidate if best is None or _order(candidate) < _order(best) else best

    def merge_accumulators(self, accumulators: Iterable[Ranked | None]) -> Ranked | None:
        present = [acc for acc in accumulators if acc is not None]
        return min(present, key=_order) if present else None

    def extract_output(self, best: Ranked | None) -> MediaRecord | None:
        return None if best is None else best[2]


class LowestQuota:
    """Accumulator of LowestQuotaFn: at most ~2×quota ranked records, compacted lazily.

    Appending and sorting in batches costs O(log quota) per record amortised; once the
    buffer has been compacted, records ranked above the current quota-th are rejected with
    one comparison, so a large stream is streamed through, never held.
    """

    __slots__ = ("quota", "items", "threshold")

    def __init__(self, quota: int = 0, items: list[Ranked] | None = None, threshold: tuple[int, str] | None = None):
        self.quota = quota
        self.items = items if items is not None else []
        self.threshold = threshold

    def __reduce__(self):
        return LowestQuota, (self.quota, self.items, self.threshold)

    def offer(self, item: Ranked) -> None:
        if self.threshold is not None and _order(item) >= self.threshold:
            return
        self.items.append(item)
        if len(self.items) >= 2 * self.quota + 16:
            self.compact()

    def compact(self) -> None:
        self.items.sort(key=_order)
        del self.items[self.quota :]
        if len(self.items) == self.quota and self.quota:
            self.threshold = _order(self.items[-1])


class LowestQuotaFn(beam.CombineFn):
    """Per key, the ``quota`` records of lowest rank, where every input carries the quota.

    Inputs are ``(quota, (rank, url, record))``. The quota travels with the value because a
    CombineFn with side inputs does not run on the FnApiRunner; all values of one key carry
    the same quota. Memory is O(quota) per key and accumulators merge in any order.
    """

    def create_accumulator(self) -> LowestQuota:
        return LowestQuota()

    def add_input(self, accumulator: LowestQuota, element: tuple[int, Ranked]) -> LowestQuota:
        quota, item = element
        accumulator.quota = max(accumulator.quota, quota)
        accumulator.offer(item)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[LowestQuota]) -> LowestQuota:
        merged = LowestQuota()
        for accumulator in accumulators:
            merged.quota = max(merged.quota, accumulator.quota)
            for item in accumulator.items:
                merged.offer(item)
        merged.compact()
        return merged

    def compact(self, accumulator: LowestQuota) -> LowestQuota:
        accumulator.compact()
        return accumulator

    def extract_output(self, accumulator: LowestQuota) -> list[MediaRecord]:
        accumulator.compact()
        return [record for _, _, record in accumulator.items]
