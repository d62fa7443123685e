"""DownloadMedia (placeholder)."""

from __future__ import annotations

import apache_beam as beam


class DownloadMedia(beam.PTransform):
    @classmethod
    def from_options(cls, options) -> DownloadMedia:
        return cls()

    def expand(self, records):
        return records
