"""ReadDwcaMedia (placeholder)."""

from __future__ import annotations

import apache_beam as beam


class ReadDwcaMedia(beam.PTransform):
    @classmethod
    def from_options(cls, options) -> ReadDwcaMedia:
        return cls()

    def expand(self, pbegin):
        raise NotImplementedError("ReadDwcaMedia is not built yet")
