"""DownloadMedia's limits against the local media server: the memory ceiling, time spent queueing,
timeouts that bound the tail, a breaker that only host signals open, and the shared DNS lookup."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from beam_gbif.core.records import MediaRecord, Status
from beam_gbif.io.budget import ByteBudget, process_budget
from beam_gbif.io.fetch import FetchEngine
from beam_gbif.io.safety import AllowOnly, CheckedResolver
from beam_gbif.io.store import LocalStore
from beam_gbif.testing.collect import run_transform
from beam_gbif.testing.media_server import MediaServer
from beam_gbif.transforms.download import DownloadMedia, DownloadSettings

LOOPBACK_ONLY = AllowOnly(["127.0.0.1"])
FAST_BACKOFF = {"backoff_base": 0.02, "backoff_max": 0.05}


def download(urls: list[str], tmp_path: Path, **settings: object) -> tuple[dict[str, MediaRecord], float]:
    """Runs DownloadMedia over ``urls``; returns the results by URL and the wall time."""
    records = [MediaRecord(url=url, label="sp", occurrence_key=i) for i, url in enumerate(urls)]
    transform = DownloadMedia(DownloadSettings(str(tmp_path / "ds"), address_policy=LOOPBACK_ONLY, **settings))
    started = time.monotonic()
    results, _ = run_transform(transform, tmp_path, records=records)
    return {r.url: r for r in results}, time.monotonic() - started


def hit_gaps(media: MediaServer) -> list[float]:
    times = sorted(t for t, _ in media.hit_times)
    return [b - a for a, b in zip(times, times[1:], strict=False)]


# -- §1 the memory ceiling ---------------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_held_bytes_never_exceed_max_buffer_bytes(tmp_path):
    limit = 30_011  # a budget of its own: the process keeps one per limit
    with MediaServer(latency=0.05) as media:
        # 12 kB bodies with a Content-Length (two fit at once) and chunked ones (each reserves all of it).
        urls = [media.url(f"mem{i}") for i in range(40)] + [media.fault_url(f"oversize_stream/20000/chunked{i}.jpg") for i in range(4)]
        results, _ = download(urls, tmp_path, max_buffer_bytes=limit, max_bytes=100_000, max_concurrency=64)
    assert {r.status for r in results.values()} == {Status.DOWNLOADED}, "every record still downloads"
    budget = process_budget(limit)
    assert 12_000 < budget.peak <= limit, f"held bytes peaked at {budget.peak}"
    assert budget.held == 0, "every reservation given back once its file was written"


class HeldWriteStore(LocalStore):
    """A local store whose writes wait until the test lets them go."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writing = threading.Event()
        self.go = threading.Event()

    def write_atomic(self, rel: str, data: bytes, content_type: str = "", metadata: dict[str, str] | None = None) -> bool:
        self.writing.set()
        assert self.go.wait(20), "the test never let the write go"
        return super().write_atomic(rel, data, content_type, metadata)


@pytest.mark.timeout(60)
def test_a_body_holds_its_bytes_until_its_write_finished(tmp_path):
    limit = 50_021  # a budget of its own
    settings = DownloadSettings(str(tmp_path / "ds"), address_policy=LOOPBACK_ONLY, max_buffer_bytes=limit)
    store = HeldWriteStore(tmp_path / "ds")

    async def fetch_one(url: str, pool: ThreadPoolExecutor) -> tuple[int, MediaRecord]:
        engine = FetchEngine(settings, LOOPBACK_ONLY, store, pool)
        await engine.open()
        try:
            task = asyncio.ensure_future(engine.handle(MediaRecord(url=url, label="sp", occurrence_key=1), ("127.0.0.1", 0), {}))
            assert await asyncio.get_running_loop().run_in_executor(None, store.writing.wait, 20)
            held_while_writing = engine.budget.held
            store.go.set()
            result, _ = await task
            return held_while_writing, result
        finally:
            await engine.close()

    with MediaServer() as media, ThreadPoolExecutor(2) as pool:
        held, result = asyncio.run(fetch_one(media.url("held"), pool))
    assert result.status == Status.DOWNLOADED
    assert held == result.original_bytes > 0, "a body waiting for its write still counts against --max_buffer_bytes"
    assert process_budget(limit).held == 0, "and gives its bytes back once written"


@pytest.mark.timeout(60)
def test_a_body_larger_than_the_budget_downloads_alone(tmp_path):
    with MediaServer() as media:
        urls = [media.url(f"big{i}") for i in range(3)] + [media.fault_url(f"oversize_stream/20000/bigchunked{i}.jpg") for i in range(2)]
        results, _ = download(urls, tmp_path, max_buffer_bytes=5_003, max_bytes=100_000)
    assert {r.status for r in results.values()} == {Status.DOWNLOADED}
    assert process_budget(5_003).held == 0


def test_byte_budget_serves_in_order_and_a_cancelled_waiter_holds_nothing():
    async def scenario() -> None:
        budget = ByteBudget(100)
        await budget.reserve(60)
        big = asyncio.ensure_future(budget.reserve(80))
        small = asyncio.ensure_future(budget.reserve(30))  # would fit, but comes after the big one
        await asyncio.sleep(0.01)
        assert not big.done() and not small.done()
        big.cancel()
        await asyncio.wait_for(small, 1)
        assert big.cancelled() and budget.held == 90
        budget.release(60)
        budget.release(30)
        assert (budget.held, budget.peak) == (0, 90)

    asyncio.run(scenario())


def test_byte_budget_wakes_a_waiter_on_another_threads_loop():
    budget = ByteBudget(100)
    asyncio.run(budget.reserve(100))
    waited: list[float] = []

    def other_worker_thread() -> None:
        started = time.monotonic()
        asyncio.run(asyncio.wait_for(budget.reserve(50), 5))
        waited.append(time.monotonic() - started)

    thread = threading.Thread(target=other_worker_thread)
    thread.start()
    time.sleep(0.2)
    budget.release(100)
    thread.join(5)
    assert waited and 0.15 < waited[0] < 2 and budget.held == 50


# -- §2 (c) queueing is not a timeout -----------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_queueing_for_a_worker_slot_never_times_out(tmp_path):
    # All in their host slots, one request at a time, 0.3 s each: the last record queues ~8 s for
    # the worker slot, past its 5.5 s time budget (0.5 s timeout, no retry, + 5 s) if that budget ran while it queues.
    with MediaServer(latency=0.3) as media:
        results, _ = download([media.url(f"q{i}") for i in range(28)], tmp_path, max_concurrency=1, per_host_concurrency=64,
                              timeout=0.5, max_retries=0)
    assert [r.error for r in results.values() if r.status != Status.DOWNLOADED] == []


# -- §2 (b) the tail is bounded ------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_a_timed_out_request_is_retried_once(tmp_path):
    with MediaServer() as media:
        url = media.fault_url("slow_first_byte/5/once.jpg")
        results, _ = download([url], tmp_path, timeout=0.5, max_retries=3, **FAST_BACKOFF)
        assert media.hits["/slow_first_byte/5/once.jpg"] == 2
    assert results[url].status == Status.FAILED_TIMEOUT


@pytest.mark.timeout(90)
def test_a_host_that_timed_out_gets_short_first_byte_timeouts(tmp_path):
    with MediaServer() as media:
        silent = [media.fault_url(f"slow_first_byte/20/silent{i}.jpg") for i in range(6)]
        good = media.url("answers")
        results, seconds = download([*silent, good], tmp_path, per_host_concurrency=1, timeout=3, slow_host_first_byte=0.2,
                                    max_retries=3, **FAST_BACKOFF)
    assert [results[u].status for u in silent] == [Status.FAILED_TIMEOUT] * 6
    assert results[good].status == Status.DOWNLOADED, "a host that answers gets its full timeout back"
    # One full 3 s timeout, then 0.2 s ones: ~6 s. Full-length attempts would take 6 × 2 × 3 s.
    assert seconds < 20


# -- §2 (a) only host signals open the breaker ---------------------------------------------------------------
@pytest.mark.timeout(60)
def test_answers_about_one_url_never_pause_the_host_or_delay_a_good_url(tmp_path):
    with MediaServer() as media:
        per_url = {**{media.fault_url(f"status/404/gone{i}.jpg"): Status.FAILED_HTTP for i in range(4)},
                   **{media.fault_url(f"html/page{i}.jpg"): Status.FAILED_NOT_MEDIA for i in range(4)},
                   **{media.fault_url(f"truncated/cut{i}.jpg"): Status.FAILED_TRUNCATED for i in range(4)}}
        good = media.url("fine")
        results, _ = download([*per_url, good], tmp_path, per_host_concurrency=1, timeout=2, max_retries=1, circuit_threshold=2,
                              circuit_cooldown=5, **FAST_BACKOFF)
        gaps = hit_gaps(media)
    assert {url: results[url].status for url in per_url} == per_url
    assert results[good].status == Status.DOWNLOADED
    assert max(gaps) < 1.0, f"the host was paused: {gaps}"


# -- §2 (d) the shared DNS lookup ----------------------------------------------------------------------------
class FakeLookup:
    """Stands in for aiohttp's resolver: slow, counts its lookups, fails while ``fail`` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict]:
        self.calls += 1
        await asyncio.sleep(0.1)
        if self.fail:
            raise OSError(-2, f"no such host {host}")
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}]

    async def close(self) -> None:
        pass


def test_a_cancelled_or_failed_shared_lookup_fails_no_other_waiter():
    async def scenario() -> None:
        resolver = CheckedResolver(LOOPBACK_ONLY)
        lookup = resolver._inner = FakeLookup()
        first = asyncio.ensure_future(resolver.resolve("media.example", 80))
        second = asyncio.ensure_future(resolver.resolve("media.example", 80))
        await asyncio.sleep(0.02)
        first.cancel()  # e.g. its record ran out of time: the lookup goes on for the other waiter
        assert [a["host"] for a in await second] == ["127.0.0.1"]
        assert first.cancelled() and lookup.calls == 1

        lookup.fail = True
        waiters = [asyncio.ensure_future(resolver.resolve("other.example", 80)) for _ in range(2)]
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(o, OSError) for o in outcomes), outcomes  # each gets the failure, not a crash
        lookup.fail = False
        assert await resolver.resolve("other.example", 80), "a failed lookup is not cached"
        assert lookup.calls == 3

    asyncio.run(scenario())
