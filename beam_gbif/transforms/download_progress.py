"""Download progress: Beam counters and, from the DoFn's own thread, a live bar on a local terminal or a periodic log line."""

from __future__ import annotations

import collections
import logging
import time

from apache_beam.metrics import Metrics

from beam_gbif import METRICS_NAMESPACE, NOTICE
from beam_gbif.core.records import MediaRecord, Status
from beam_gbif.transforms.live_bars import advance, bar, set_total

LOG = logging.getLogger("beam_gbif.download")


class DownloadProgress:
    """Counters ``media_downloaded``, ``media_skipped_existing``, ``media_failed``, ``media_failed_<reason>``
    (e.g. ``media_failed_http``), ``media_bytes_downloaded``, ``media_http_attempts``; plus a log line every
    ``interval`` seconds: records done, rate and failures by reason."""

    def __init__(self, interval: float = 30.0) -> None:
        self.interval = interval
        self._counters: dict[str, object] = {}
        self.started = time.monotonic()
        self.last_log = self.started
        self.done = 0
        self.by_status: collections.Counter[str] = collections.Counter()
        self._bar: object | None = None

    def expect(self, total: int | None) -> None:
        """The records this run downloads in all (known once sampling is done); draws the live bar when bars are on."""
        if self._bar is None:
            self._bar = bar("downloading")
        if total is not None:
            set_total(self._bar, total)

    def _inc(self, name: str, value: int = 1) -> None:
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = Metrics.counter(METRICS_NAMESPACE, name)
        counter.inc(value)

    def count(self, record: MediaRecord, attempts: int) -> None:
        self.done += 1
        self.by_status[record.status] += 1
        if record.status == Status.DOWNLOADED:
            self._inc("media_downloaded")
            self._inc("media_bytes_downloaded", record.bytes)
        elif record.status == Status.SKIPPED_EXISTING:
            self._inc("media_skipped_existing")
        elif record.status.startswith("FILTERED"):  # a size filter's choice, not a failure
            self._inc("media_filtered")
            self._inc(f"media_{record.status.lower()}")
        else:
            self._inc("media_failed")
            self._inc(f"media_{record.status.lower()}")
        if attempts:
            self._inc("media_http_attempts", attempts)
        if self._bar is not None:
            advance(self._bar, Status.is_failure(record.status), record.bytes if record.status == Status.DOWNLOADED else 0)

    def maybe_log(self) -> None:
        now = time.monotonic()
        if self._bar is not None or now - self.last_log < self.interval:
            return
        self.last_log = now
        elapsed = max(now - self.started, 1e-9)
        failures = {s: n for s, n in sorted(self.by_status.items()) if Status.is_failure(s)}
        LOG.log(NOTICE, "download: %d records done (%d downloaded, %d skipped) in %.0f s, %.1f/s; failures: %s", self.done,
                 self.by_status[Status.DOWNLOADED], self.by_status[Status.SKIPPED_EXISTING], elapsed, self.done / elapsed,
                 ", ".join(f"{s}={n}" for s, n in failures.items()) or "none")
