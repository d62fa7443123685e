"""SampleStreams (placeholder: passes every record through until the sampling work lands)."""

from __future__ import annotations

import apache_beam as beam

from beam_gbif.sampling_quotas import compute_quotas

__all__ = ["SampleStreams", "compute_quotas"]


class SampleStreams(beam.PTransform):
    @classmethod
    def from_options(cls, options) -> SampleStreams:
        return cls()

    def expand(self, records):
        return records
