"""WriteManifest (placeholder)."""

from __future__ import annotations

import apache_beam as beam


class WriteManifest(beam.PTransform):
    @classmethod
    def from_options(cls, options) -> WriteManifest:
        return cls()

    def expand(self, results):
        return results
