"""ReadOccurrenceMedia (placeholder)."""

from __future__ import annotations

import apache_beam as beam


class ReadOccurrenceMedia(beam.PTransform):
    @classmethod
    def from_options(cls, options) -> ReadOccurrenceMedia:
        return cls()

    def expand(self, pbegin):
        raise NotImplementedError("ReadOccurrenceMedia is not built yet")
