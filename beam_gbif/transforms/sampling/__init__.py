"""Sampling as a package: SampleStreams (streams.py) over the bounded one-pass sampler (bounded.py) and
the seeded per-stream combiners (combiners.py); the quota arithmetic itself is pure (core/quotas.py)."""

from beam_gbif.transforms.sampling.streams import (
    AUTO,
    BOUNDED,
    BOUNDED_SAMPLE_LIMIT,
    CAP_ONLY,
    EVERYTHING,
    RECORDS_AVAILABLE,
    RECORDS_SELECTED,
    SHORT_STREAMS,
    STREAMS,
    TWO_PASS,
    OneMediaPerOccurrence,
    SampleStreams,
    SamplingSettings,
    requested_per_stream,
    stream_stats_rows,
)

__all__ = ["AUTO", "BOUNDED", "BOUNDED_SAMPLE_LIMIT", "CAP_ONLY", "EVERYTHING", "RECORDS_AVAILABLE", "RECORDS_SELECTED", "SHORT_STREAMS",
           "STREAMS", "TWO_PASS", "OneMediaPerOccurrence", "SampleStreams", "SamplingSettings", "requested_per_stream", "stream_stats_rows"]
