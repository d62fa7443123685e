"""Mergeable, deterministic "keep the lowest ranks" combiners used by SampleStreams.

Beam's Sample/Top use the unseeded global ``random``; these rank every record by a seeded
hash of its URL, so the kept set depends only on (seed, records), never on bundle order,
worker count or runner. Ties on the 64-bit rank (vanishingly rare) are broken on the URL.
"""

from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam
from apache_beam import coders

from beam_gbif.core.hashing import seeded_hash
from beam_gbif.core.records import MediaRecord
from beam_gbif.transforms.coders import MediaRecordCoder

# Independent purposes: the media an occurrence keeps must not bias which occurrences a
# stream keeps (with one hash, occurrences with many media would win more often).
ONE_MEDIA_PURPOSE = "one-media-per-occurrence"
STREAM_SAMPLE_PURPOSE = "stream-sample"

Ranked = tuple[int, str, MediaRecord]  # (rank, url, record): url breaks rank ties


def ranked(record: MediaRecord, seed: int, purpose: str) -> Ranked:
    return seeded_hash(seed, record.url, purpose=purpose), record.url, record


def one_media_of_occurrence(records: Iterable[MediaRecord], seed: int) -> MediaRecord | None:
    """The media OneMediaPerOccurrence keeps among one occurrence's records (None if none).

    For a source that holds all media of an occurrence together: choosing there selects the
    same media as the pipeline step, without its per-occurrence shuffle.
    """
    return min(records, key=lambda record: _order(ranked(record, seed, ONE_MEDIA_PURPOSE)), default=None)


def _order(item: Ranked) -> tuple[int, str]:
    return item[0], item[1]


class LowestRankedFn(beam.CombineFn):
    """Per key, the one record of lowest (rank, url): one media per occurrence.

    The accumulator is bytes — the 8-byte rank, the URL's length and the encoded record — so
    a shuffle with one accumulator per occurrence (the FnApiRunner holds every one of them in
    memory) costs a few hundred bytes per occurrence instead of a pickled Python object.
    """

    def __init__(self, seed: int, purpose: str = ONE_MEDIA_PURPOSE):
        super().__init__()
        self._seed = seed
        self._purpose = purpose
        self._record_coder = MediaRecordCoder()

    def create_accumulator(self) -> bytes:
        return b""

    def add_input(self, best: bytes, record: MediaRecord) -> bytes:
        rank = seeded_hash(self._seed, record.url, purpose=self._purpose)
        if best and (rank, record.url) >= _rank_and_url(best):
            return best
        url = record.url.encode("utf-8")
        return rank.to_bytes(8, "big") + len(url).to_bytes(4, "big") + url + self._record_coder.encode(record)

    def merge_accumulators(self, accumulators: Iterable[bytes]) -> bytes:
        present = [acc for acc in accumulators if acc]
        return min(present, key=_rank_and_url) if present else b""

    def extract_output(self, best: bytes) -> MediaRecord | None:
        if not best:
            return None
        url_length = int.from_bytes(best[8:12], "big")
        return self._record_coder.decode(best[12 + url_length :])

    def get_accumulator_coder(self) -> coders.Coder:
        return coders.BytesCoder()


def _rank_and_url(accumulator: bytes) -> tuple[int, str]:
    url_length = int.from_bytes(accumulator[8:12], "big")
    return int.from_bytes(accumulator[:8], "big"), accumulator[12 : 12 + url_length].decode("utf-8")


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
