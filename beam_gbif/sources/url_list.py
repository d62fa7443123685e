"""ReadUrlList (placeholder)."""

from __future__ import annotations

import apache_beam as beam


class ReadUrlList(beam.PTransform):
    @classmethod
    def from_options(cls, options) -> ReadUrlList:
        return cls()

    def expand(self, pbegin):
        raise NotImplementedError("ReadUrlList is not built yet")
