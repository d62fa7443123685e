"""The media fetch engine: one record → one file under the dataset root and one result record.

Records are grouped by (host, shard) so per-host limits hold across workers (see hosts.py). The
DoFn owns an asyncio event loop (created in ``setup``) that runs in the DoFn's thread: ``process``
queues one task per record, ``finish_bundle`` runs them all and emits the results as
WindowedValues (Beam 2.77's AsyncWrapper lost outputs on the batch runners; this does not). File
writes and hashing run in a thread pool so the loop never stalls on the disk or on GCS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from yarl import URL

from beam_gbif import DEFAULT_USER_AGENT
from beam_gbif.core.errors import OptionError
from beam_gbif.core.records import MediaRecord, Status, safe_label_dir
from beam_gbif.core.sniff import MIME_BY_EXT
from beam_gbif.core.source_sizes import MISSING_VERSION_STATUSES, source_candidates
from beam_gbif.io.budget import ByteBudget, Lease, process_budget
from beam_gbif.io.fetch_http import Failure, HttpFetcher, paused
from beam_gbif.io.hosts import CircuitBreaker, ShardGate, host_shards, shard_share, url_host
from beam_gbif.io.images import ImageSettings, Rejected, prepare
from beam_gbif.io.local_files import is_temp_name, temp_target
from beam_gbif.io.safety import AddressPolicy, CheckedResolver, policy_for
from beam_gbif.io.store import Store, StoreError, store_for

__all__ = ["DownloadSettings", "Failure", "FetchEngine", "failed", "relative_folder"]


@dataclasses.dataclass(frozen=True)
class DownloadSettings:
    """Every knob of the downloader; picklable, shared by DownloadMedia, its DoFn and the engine.

    ``output``: the dataset root (local folder or gs://bucket/prefix). ``allow_private_hosts``:
    loopback and private addresses are allowed too (local tests only), never link-local or cloud
    metadata ones (see safety.py); ``address_policy`` overrides
    that choice (tests inject one). ``scratch_dir``: the grouping by host shard spills there
    (local runners; see transforms/spill.py). ``max_buffer_bytes``: the bodies in flight and waiting
    to be written hold at most this many bytes per worker process (io/budget.py).
    ``slow_host_first_byte``: after a request to a host got no answer in time, that host's requests
    wait at most this long for a first byte until it answers again. ``write_threads``: writers of a
    local store (GCS uploads get at least 64): a few suffice, more only contend for the GIL.
    ``fsync``: off, since temp file + rename already keeps files whole when a run is killed; on,
    files also survive a power loss. ``max_pending``: records queued per DoFn at once (not a few
    times ``max_concurrency``: a bundle's records come one host shard at a time, and a shard only
    gets its share of ``per_host_concurrency``, so the shards must be queued together). The rest: limits,
    timeouts and retries of the fetch.
    """

    output: str = ""
    allow_private_hosts: bool = False
    address_policy: AddressPolicy | None = None
    scratch_dir: str | None = None
    max_concurrency: int = 256
    per_host_concurrency: int = 16
    per_host_rate: float = 0.0
    max_retries: int = 3
    timeout: float = 30.0
    max_bytes: int = 50 * 1024 * 1024
    max_buffer_bytes: int = 1 << 30
    slow_host_first_byte: float = 5.0
    user_agent: str = DEFAULT_USER_AGENT
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_redirects: int = 10
    session_per_bundle: bool = False
    write_threads: int = 8
    fsync: bool = False
    progress_interval: float = 30.0
    max_pending: int = 50_000
    circuit_threshold: int = 8
    circuit_cooldown: float = 2.0
    circuit_max_cooldown: float = 60.0
    images: ImageSettings = ImageSettings()

    def __post_init__(self) -> None:
        if not self.output:
            raise OptionError("--output is required: a local folder or gs://bucket/prefix for the dataset")
        try:
            object.__setattr__(self, "output", store_for(self.output).root)
        except StoreError as exc:
            raise OptionError(f"--output: {exc}") from None
        self.validate()

    @property
    def policy(self) -> AddressPolicy:
        return self.address_policy or policy_for(self.allow_private_hosts)

    def validate(self) -> None:
        checks = [("max_concurrency", "at least 1", lambda v: v >= 1), ("per_host_concurrency", "at least 1", lambda v: v >= 1),
                  ("per_host_rate", "at least 0", lambda v: v >= 0), ("max_retries", "at least 0", lambda v: v >= 0),
                  ("timeout", "positive", lambda v: v > 0), ("max_bytes", "positive", lambda v: v > 0),
                  ("max_buffer_bytes", "positive", lambda v: v > 0), ("slow_host_first_byte", "positive", lambda v: v > 0)]
        for name, requirement, ok in checks:
            value = getattr(self, name)
            if not ok(value):
                raise OptionError(f"--{name} must be {requirement}, got {value!r}")

    @property
    def record_budget(self) -> float:
        """Hard ceiling on one record's fetch (all attempts, backoffs and host pauses): nothing hangs.

        It runs from the record's first request on and stands still while the record queues (for
        a rate token, a worker slot or memory), so queueing never turns into FAILED_TIMEOUT."""
        return (self.max_retries + 1) * self.timeout + self.max_retries * self.backoff_max * 1.5 + 5.0


def relative_folder(record: MediaRecord) -> str:
    """``[split/]label_dir``, each segment safe even if a record was built by hand (label_dir is never empty: see MediaRecord)."""
    label_dir = safe_label_dir(record.label_dir)
    return f"{safe_label_dir(record.split)}/{label_dir}" if record.split else label_dir


class FetchEngine:
    """Lives on the DoFn's event loop thread: fetching, gates, breakers, writes."""

    def __init__(self, settings: DownloadSettings, policy: AddressPolicy, store: Store, executor: ThreadPoolExecutor,
                 resolver: CheckedResolver | None = None, image_executor: ThreadPoolExecutor | None = None) -> None:
        self.settings = settings
        self.policy = policy
        self.store = store
        self.executor = executor  # writes, hashing, listings: I/O-bound
        self.image_executor = image_executor or executor  # decode/resize/encode: CPU-bound (see io/images.py)
        self.shards = host_shards(settings.per_host_concurrency)
        self.http = HttpFetcher(settings, policy, resolver)
        self.gates: dict[tuple[str, int], ShardGate] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.global_slots: asyncio.Semaphore | None = None
        self.budget: ByteBudget = process_budget(settings.max_buffer_bytes)

    async def open(self) -> None:
        self.global_slots = asyncio.Semaphore(self.settings.max_concurrency)
        await self.http.open()

    async def close(self) -> None:
        await self.http.close()

    def _run(self, fn: Any, *args: Any) -> asyncio.Future:
        return asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- one record ------------------------------------------------------------------------------
    async def handle(self, record: MediaRecord, key: tuple[str, int], folders: dict[str, Any]) -> tuple[MediaRecord, int]:
        folder = relative_folder(record)
        try:
            existing, stale = await self._lookup(folder, record.basename, folders)
        except Exception as exc:  # noqa: BLE001 - a store that cannot be listed fails the record, not the job
            return failed(record, Status.FAILED_WRITE, f"cannot list {self.store.uri(folder)}: {exc}"), 0
        try:
            if existing:
                rel = f"{folder}/{existing}"
                size, sha = await self._run(self.store.describe, rel)
                ext = existing.rpartition(".")[2]
                return record.replace(status=Status.SKIPPED_EXISTING, path=rel, bytes=size, sha256=sha,
                                      content_type=MIME_BY_EXT.get(ext, ""), error=""), 0
            return await self._download(record, key, folder)
        finally:
            for name in stale:  # temp files of a killed run, for this very file: nobody else writes it
                await self._run(self.store.delete, f"{folder}/{name}")

    async def _lookup(self, folder: str, basename: str, folders: dict[str, Any]) -> tuple[str, list[str]]:
        """(existing file name or "", stale temp names) for ``basename`` in ``folder``."""
        if self.store.is_local:
            # One listing per folder per bundle, shared by all records of that folder.
            if folder not in folders:
                folders[folder] = asyncio.ensure_future(self._run(self._index_folder, folder))
            index = await folders[folder]
            names = index.get(basename, [])
        else:
            names = await self._run(self.store.list_dir, folder, basename + ".")
        finals = sorted(n for n in names if not is_temp_name(n))
        stale = [n for n in names if is_temp_name(n)]
        return (finals[0] if finals else ""), stale

    def _index_folder(self, folder: str) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for name in self.store.list_dir(folder):
            target = temp_target(name) if is_temp_name(name) else name
            index.setdefault(target.partition(".")[0], []).append(name)
        return index

    def _gate(self, key: tuple[str, int]) -> ShardGate:
        gate = self.gates.get(key)
        if gate is None:
            shard = key[1]
            gate = self.gates[key] = ShardGate(shard_share(self.settings.per_host_concurrency, self.shards, shard),
                                               self.settings.per_host_rate / self.shards, phase=shard / self.shards)
        return gate

    def _health(self, host: str) -> CircuitBreaker:
        breaker = self.breakers.get(host)
        if breaker is None:
            s = self.settings
            breaker = self.breakers[host] = CircuitBreaker(s.circuit_threshold, s.circuit_cooldown, s.circuit_max_cooldown)
        return breaker

    async def _download(self, record: MediaRecord, key: tuple[str, int], folder: str) -> tuple[MediaRecord, int]:
        images = self.settings.images
        gate = self._gate(key)
        candidates = source_candidates(record.url, images.source_size, images.image_size, images.resize_mode)
        missing: list[str] = []  # smaller versions the host does not have, in the order tried
        attempts = 0
        async with gate.semaphore:
            for index, url in enumerate(candidates):
                try:
                    fetched = await self._fetch_with_retries(url, record.media_type, gate, self._health(key[0]))
                    break
                except Failure as failure:
                    attempts += failure.attempts
                    note = f"{url}: {failure.message}"
                    if index + 1 < len(candidates) and failure.http_status in MISSING_VERSION_STATUSES:
                        missing.append(note)  # this version is not published: fall back to the next URL
                        continue
                    return failed(record, failure.status, "; ".join([*missing, note]), fetched_url=url), attempts
        attempts += fetched.attempts
        # The host slot is free again; the worker slot and the body's bytes stay held until the
        # file is written, so bodies waiting for a writer count toward both limits.
        result = record.replace(fetched_url=url, original_bytes=len(fetched.body),
                                error="; ".join(f"{note} (fell back to the published URL)" for note in missing))
        try:
            return await self._store_body(result, folder, fetched), attempts
        finally:
            fetched.lease.release()

    async def _store_body(self, record: MediaRecord, folder: str, fetched: Fetched) -> MediaRecord:
        """Prepares the image (decode check, resize: a CPU pool) and writes it; the result record."""
        try:
            ready = await asyncio.get_running_loop().run_in_executor(
                self.image_executor, prepare, fetched.body, fetched.ext, fetched.mime, self.settings.images)
        except Rejected as rejected:
            return failed(record, rejected.status, rejected.message, fetched_url=record.fetched_url,
                          original_bytes=record.original_bytes)
        fetched.body = b""  # the original is no longer needed: only the stored bytes are held from here on
        rel = f"{folder}/{record.basename}.{ready.ext}"
        try:
            size, sha = await self._run(self.write, rel, ready.body, ready.mime)
        except Exception as exc:  # noqa: BLE001 - any store error is a write failure
            return failed(record, Status.FAILED_WRITE, f"cannot write {self.store.uri(rel)}: {exc}",
                          fetched_url=record.fetched_url, original_bytes=record.original_bytes)
        return record.replace(status=Status.DOWNLOADED, path=rel, bytes=size, sha256=sha, content_type=ready.mime,
                              width=ready.width, height=ready.height, original_width=ready.original_width,
                              original_height=ready.original_height)

    def write(self, rel: str, body: bytes, mime: str) -> tuple[int, str]:
        """Writes ``body`` at ``rel``; (size, sha256) of the file that is there afterwards."""
        sha = hashlib.sha256(body).hexdigest()
        if self.store.write_atomic(rel, body, mime, {"sha256": sha}):
            return len(body), sha
        # A create-only write kept an object another attempt wrote first: describe what it holds, not what we sent.
        return self.store.describe(rel)

    async def _fetch_with_retries(self, raw_url: str, media_type: str, gate: ShardGate, health: CircuitBreaker) -> Fetched:
        s = self.settings
        try:
            url = URL(raw_url.strip())
        except (ValueError, TypeError) as exc:
            raise Failure(Status.FAILED_INVALID_URL, f"invalid URL: {exc}") from None
        attempt = timeouts = 0
        clock = asyncio.timeout(None)  # the record's time budget, started by its first request
        try:
            async with clock:
                while True:
                    attempt += 1
                    await self._wait_for_host(health, clock, raw_url, attempt)
                    lease = await self._queue_for_request(gate, clock)
                    try:
                        body, ext, mime = await self.http.attempt(url, media_type, health, clock, lease)
                    except BaseException as exc:
                        lease.release()
                        if not isinstance(exc, Failure):
                            raise
                        failure = exc
                    else:
                        health.record(True)
                        return Fetched(body, ext, mime, attempt, lease)
                    failure.attempts = attempt
                    if failure.host_signal:
                        health.record(False)
                    timeouts += failure.status == Status.FAILED_TIMEOUT
                    # A timed-out request is retried once: a URL that never answers costs two --timeout at most.
                    if not failure.retryable or attempt > s.max_retries or timeouts > 1:
                        raise failure
                    await self._back_off(failure, attempt, clock)
        except TimeoutError:
            if not clock.expired():
                raise
            raise Failure(Status.FAILED_TIMEOUT, f"record time budget of {s.record_budget:.0f} s exceeded", attempts=attempt) from None

    async def _queue_for_request(self, gate: ShardGate, clock: asyncio.Timeout) -> Lease:
        """Waits for a rate token and a worker slot (the record's clock stands still), then starts the clock."""
        if gate.rate.interval or self.global_slots.locked():  # else neither waits: no clock to stop
            async with paused(clock):
                await gate.rate.wait()
                await self.global_slots.acquire()
        else:
            await self.global_slots.acquire()
        if clock.when() is None:
            clock.reschedule(asyncio.get_running_loop().time() + self.settings.record_budget)
        return Lease(self.global_slots, self.budget)

    @staticmethod
    def _remaining(clock: asyncio.Timeout, budget: float) -> float:
        when = clock.when()
        return budget if when is None else when - asyncio.get_running_loop().time()

    async def _wait_for_host(self, health: CircuitBreaker, clock: asyncio.Timeout, url: str, attempt: int) -> None:
        wait = health.wait_time()
        if not wait:
            return
        if wait > self._remaining(clock, self.settings.record_budget):
            message = f"host {url_host(url)} keeps failing: circuit open for {wait:.0f} s more"
            raise Failure(Status.FAILED_CONNECTION, message, attempts=attempt - 1)
        await asyncio.sleep(wait)

    async def _back_off(self, failure: Failure, attempt: int, clock: asyncio.Timeout) -> None:
        s = self.settings
        delay = min(s.backoff_max, s.backoff_base * 2 ** (attempt - 1)) * (0.5 + random.random())
        if failure.retry_after is not None:
            if failure.retry_after + s.timeout > self._remaining(clock, s.record_budget):
                failure.message += f" (Retry-After {failure.retry_after:.0f} s is beyond this record's time budget)"
                raise failure
            delay = max(delay, failure.retry_after)
        await asyncio.sleep(delay)


@dataclasses.dataclass
class Fetched:
    """A body ready to be written, with the lease (worker slot, bytes) it holds until then."""

    body: bytes
    ext: str
    mime: str
    attempts: int
    lease: Lease


def failed(record: MediaRecord, status: str, error: str, fetched_url: str = "", original_bytes: int = 0) -> MediaRecord:
    """``record`` without a file: ``status`` (a failure or a filter) and why."""
    return record.replace(status=status, error=error, path="", bytes=0, sha256="", content_type="", width=0, height=0,
                          original_width=0, original_height=0, original_bytes=original_bytes, fetched_url=fetched_url)


