"""Politeness per media host that holds across workers: (host, shard) keys, per-shard limits, circuit breaker.

Records are keyed by (host, shard) and grouped before download, so each shard of a host is
handled by exactly one worker. A host gets ``host_shards(per_host_concurrency)`` shards and each
shard at most its share of the host's concurrency and request rate, so the sums over shards —
whatever the number of workers — never exceed ``--per_host_concurrency`` and ``--per_host_rate``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from urllib.parse import urlsplit

MAX_SHARDS_PER_HOST = 8


def url_host(url: str) -> str:
    """``host[:port]`` in lower case, or "" for a URL without one."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        return f"{host}:{parts.port}" if host and parts.port else host
    except ValueError:
        return ""


def host_shards(per_host_concurrency: int) -> int:
    """Shards per host: several (so a big host is spread over workers), each with ≥1 request in flight."""
    return max(1, min(per_host_concurrency, MAX_SHARDS_PER_HOST))


def shard_of(url: str, shards: int) -> int:
    digest = hashlib.blake2b(url.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def host_shard_key(url: str, shards: int) -> tuple[str, int]:
    return url_host(url), shard_of(url, shards)


def shard_share(total: int, shards: int, shard: int) -> int:
    """This shard's part of a per-host integer limit (the parts sum exactly to ``total``)."""
    base, extra = divmod(total, shards)
    return base + (1 if shard < extra else 0)


class RateLimiter:
    """Spaces requests ``1/rate`` seconds apart (no bursts); rate 0 means unlimited.

    ``phase`` (a fraction of the interval) delays the first request, so that the shards of one
    host, started together, interleave instead of all firing at once.
    """

    def __init__(self, rate: float, phase: float = 0.0) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._phase = phase
        self._next: float | None = None

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if self._next is None:
            self._next = now + self._phase * self.interval
        start = max(now, self._next)
        self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


class CircuitBreaker:
    """The health of one host. After ``threshold`` consecutive signals that the host is failing
    (refused or reset before an answer, connect timeouts, 5xx, 429: see fetch_http.py), its
    requests pause for a cooldown that doubles on each new trip (up to ``max_cooldown``); one
    success closes the circuit. Answers about one URL (404, HTML, a short body) are no signal.

    ``slow``: the host's last request got no answer in time and no answer came since (the fetch
    then uses a short first-byte timeout for it).
    """

    def __init__(self, threshold: int = 8, cooldown: float = 2.0, max_cooldown: float = 60.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.failures = 0
        self.trips = 0
        self.open_until = 0.0
        self.slow = False

    def timed_out(self) -> None:
        self.slow = True

    def answered(self) -> None:
        self.slow = False

    def record(self, ok: bool) -> None:
        if ok:
            self.failures = 0
            self.trips = 0
            self.open_until = 0.0
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self.trips += 1
            self.failures = self.threshold - 1  # half-open: after the cooldown, one more failure trips it again
            self.open_until = time.monotonic() + min(self.cooldown * 2 ** (self.trips - 1), self.max_cooldown)

    def wait_time(self) -> float:
        return max(0.0, self.open_until - time.monotonic())


class ShardGate:
    """The concurrency and rate limits of one (host, shard), used inside the download event loop."""

    def __init__(self, concurrency: int, rate: float, phase: float = 0.0) -> None:
        self.semaphore = asyncio.Semaphore(max(1, concurrency))
        self.rate = RateLimiter(rate, phase)
