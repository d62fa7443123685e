"""One-pass exact balanced sampling: a global combiner that keeps only records that can still
be selected, bounded by the water level of the counts seen so far.

Why: the two-pass form (count every stream, then select with the quotas as a side input)
makes the runner hold the whole input until the counts are known — on the FnApiRunner that
is all records in memory. For a balanced ``nb_samples = N`` a record can be dropped early:
with counts c_j seen so far (lower bounds of the final availability), the final level t
cannot exceed the level of the partial counts, so stream i never gets more than
``min(cap, t + 1)`` (+1 for the seeded leftover units). Pruning each stream to that bound
keeps O(N + streams) records, whatever the input size, and the result is exactly the set
the two-pass form selects: the same quotas (compute_quotas on the exact final counts) and
the same lowest (rank, url) per stream.
"""

from __future__ import annotations

import sys
from typing import Any

import apache_beam as beam

from beam_gbif.core.quotas import Stream, compute_quotas, water_level
from beam_gbif.core.records import MediaRecord
from beam_gbif.transforms.sampling.combiners import STREAM_SAMPLE_PURPOSE, LowestQuota, ranked

_UNBOUNDED = sys.maxsize
_MIN_PRUNE_INTERVAL = 4096

SampleOutcome = tuple[dict[Stream, int], dict[Stream, int], list[MediaRecord]]  # availability, quotas, selected


class StreamCandidates:
    """Accumulator: exact counts per stream and each stream's lowest-ranked candidates."""

    __slots__ = ("counts", "buffers", "since_prune")

    def __init__(self, counts: dict[Stream, int] | None = None, buffers: dict[Stream, LowestQuota] | None = None, since_prune: int = 0):
        self.counts = counts if counts is not None else {}
        self.buffers = buffers if buffers is not None else {}
        self.since_prune = since_prune

    def __reduce__(self):
        return StreamCandidates, (self.counts, self.buffers, self.since_prune)


class BoundedBalancedSampleFn(beam.CombineFn):
    """CombineGlobally fn: MediaRecords → (availability, quotas, selected records)."""

    def __init__(self, nb_samples: int, nb_samples_per_stream: int | None, seed: int):
        super().__init__()
        if nb_samples < 1:
            raise ValueError("the bounded sampler needs a positive nb_samples")
        self._nb_samples = nb_samples
        self._cap = nb_samples_per_stream
        self._seed = seed

    def create_accumulator(self) -> StreamCandidates:
        return StreamCandidates()

    def add_input(self, accumulator: StreamCandidates, record: MediaRecord) -> StreamCandidates:
        stream = record.stream
        accumulator.counts[stream] = accumulator.counts.get(stream, 0) + 1
        buffer = accumulator.buffers.get(stream)
        if buffer is None:
            buffer = accumulator.buffers[stream] = LowestQuota(quota=self._cap or _UNBOUNDED)
        buffer.offer(ranked(record, self._seed, STREAM_SAMPLE_PURPOSE))
        accumulator.since_prune += 1
        if accumulator.since_prune >= self._prune_interval(accumulator):
            self._prune(accumulator)
        return accumulator

    def merge_accumulators(self, accumulators) -> StreamCandidates:
        accumulators = iter(accumulators)
        merged = next(accumulators, None) or StreamCandidates()
        for other in accumulators:
            for stream, count in other.counts.items():
                merged.counts[stream] = merged.counts.get(stream, 0) + count
            for stream, buffer in other.buffers.items():
                mine = merged.buffers.get(stream)
                if mine is None:
                    merged.buffers[stream] = buffer
                    continue
                mine.quota = min(mine.quota, buffer.quota)  # both are valid upper bounds
                for item in buffer.items:
                    mine.offer(item)
        self._prune(merged)
        return merged

    def compact(self, accumulator: StreamCandidates) -> StreamCandidates:
        # Called before an accumulator is encoded for the shuffle: send no more than the bounds.
        self._prune(accumulator)
        for buffer in accumulator.buffers.values():
            buffer.compact()
        return accumulator

    def extract_output(self, accumulator: StreamCandidates) -> SampleOutcome:
        counts = accumulator.counts
        quotas = compute_quotas(counts, nb_samples=self._nb_samples, nb_samples_per_stream=self._cap, weighted=False, seed=self._seed)
        selected: list[MediaRecord] = []
        for stream, quota in quotas.items():
            buffer = accumulator.buffers.get(stream, LowestQuota())
            buffer.quota = quota
            buffer.compact()
            if len(buffer.items) != quota:  # the pruning bound guarantees this; a miss is a bug, never a silent shortfall
                raise AssertionError(f"bounded sampler kept {len(buffer.items)} candidates of stream {stream!r} for a quota of {quota}")
            selected.extend(record for _, _, record in buffer.items)
        return dict(accumulator.counts), quotas, selected

    def _prune_interval(self, accumulator: StreamCandidates) -> int:
        return max(_MIN_PRUNE_INTERVAL, self._nb_samples + len(accumulator.counts))

    def upper_bound(self, counts: dict[Stream, int]) -> int:
        """No stream's final quota can exceed this, whatever records are still to come."""
        capped = counts.values() if self._cap is None else (min(count, self._cap) for count in counts.values())
        level = water_level(capped, self._nb_samples)
        if level is None:
            return self._cap or _UNBOUNDED
        return level + 1 if self._cap is None else min(self._cap, level + 1)

    def _prune(self, accumulator: StreamCandidates) -> None:
        bound = self.upper_bound(accumulator.counts)
        for buffer in accumulator.buffers.values():
            if bound < buffer.quota:
                buffer.quota = bound
                buffer.compact()
        accumulator.since_prune = 0


def outcome_figures(outcome: SampleOutcome) -> tuple[dict[Stream, int], dict[Stream, int], dict[Stream, int]]:
    """(selected counts, availability, quotas) of a bounded sample, for the per-stream report."""
    availability, quotas, selected = outcome
    counts: dict[Stream, Any] = {}
    for record in selected:
        counts[record.stream] = counts.get(record.stream, 0) + 1
    return counts, availability, quotas
