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
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
from yarl import URL

from beam_gbif import DEFAULT_USER_AGENT
from beam_gbif.core.errors import OptionError
from beam_gbif.core.http import parse_retry_after
from beam_gbif.core.records import MediaRecord, Status, safe_label_dir
from beam_gbif.core.sniff import MIME_BY_EXT, NotMedia, classify
from beam_gbif.io.hosts import CircuitBreaker, ShardGate, host_shards, shard_share, url_host
from beam_gbif.io.safety import AddressPolicy, CheckedResolver, RefusedAddress, check_host, policy_for
from beam_gbif.io.store import Store, StoreError, is_temp_name, store_for, temp_target

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
RETRYABLE_HTTP = frozenset({408, 425, 429})


@dataclasses.dataclass(frozen=True)
class DownloadSettings:
    """Every knob of the downloader; picklable, shared by DownloadMedia, its DoFn and the engine.

    ``output``: the dataset root (local folder or gs://bucket/prefix). ``allow_private_hosts``:
    loopback and private addresses are allowed too (local tests only), never link-local or cloud
    metadata ones (see safety.py); ``address_policy`` overrides
    that choice (tests inject one). ``scratch_dir``: the grouping by host shard spills there
    (local runners; see transforms/spill.py). The rest: limits, timeouts and retries of the fetch.
    """

    output: str = ""
    allow_private_hosts: bool = False
    address_policy: AddressPolicy | None = None
    scratch_dir: str | None = None
    max_concurrency: int = 256
    per_host_concurrency: int = 16
    per_host_rate: float = 0.0
    max_retries: int = 3
    timeout: float = 60.0
    max_bytes: int = 50 * 1024 * 1024
    user_agent: str = DEFAULT_USER_AGENT
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_redirects: int = 10
    session_per_bundle: bool = False
    write_threads: int = 32
    fsync: bool = True
    progress_interval: float = 30.0
    max_pending: int = 50_000
    circuit_threshold: int = 8
    circuit_cooldown: float = 2.0
    circuit_max_cooldown: float = 60.0

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
                  ("timeout", "positive", lambda v: v > 0), ("max_bytes", "positive", lambda v: v > 0)]
        for name, requirement, ok in checks:
            value = getattr(self, name)
            if not ok(value):
                raise OptionError(f"--{name} must be {requirement}, got {value!r}")

    @property
    def record_budget(self) -> float:
        """Hard ceiling on one record's fetch (all attempts, backoffs and waits): nothing hangs."""
        return (self.max_retries + 1) * self.timeout + self.max_retries * self.backoff_max * 1.5 + 5.0


class Failure(Exception):
    def __init__(self, status: str, message: str, retryable: bool = False, retry_after: float | None = None,
                 attempts: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = attempts


def relative_folder(record: MediaRecord) -> str:
    """``[split/]label_dir``, each segment safe even if a record was built by hand (label_dir is never empty: see MediaRecord)."""
    label_dir = safe_label_dir(record.label_dir)
    return f"{safe_label_dir(record.split)}/{label_dir}" if record.split else label_dir


class FetchEngine:
    """Lives on the DoFn's event loop thread: fetching, gates, breakers, writes."""

    def __init__(self, settings: DownloadSettings, policy: AddressPolicy, store: Store, executor: ThreadPoolExecutor,
                 resolver: CheckedResolver | None = None) -> None:
        self.settings = settings
        self._given_resolver = resolver  # tests inject one (scripted DNS answers); else one per open()
        self.policy = policy
        self.store = store
        self.executor = executor
        self.shards = host_shards(settings.per_host_concurrency)
        self.session: aiohttp.ClientSession | None = None
        self.resolver: CheckedResolver | None = None
        self.gates: dict[tuple[str, int], ShardGate] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.global_slots: asyncio.Semaphore | None = None

    async def open(self) -> None:
        self.global_slots = asyncio.Semaphore(self.settings.max_concurrency)
        # The connector resolves through the same checking resolver as check_host: an answer that
        # changes between the check and the connection (DNS rebinding) is checked again.
        self.resolver = self._given_resolver or CheckedResolver(self.policy)
        connector = aiohttp.TCPConnector(limit=self.settings.max_concurrency, limit_per_host=0, resolver=self.resolver,
                                         ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.settings.timeout, sock_read=self.settings.timeout)
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar(),
                                             headers={"User-Agent": self.settings.user_agent, "Accept": "*/*"})

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

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

    async def _download(self, record: MediaRecord, key: tuple[str, int], folder: str) -> tuple[MediaRecord, int]:
        gate = self.gates.get(key)
        if gate is None:
            shard = key[1]
            gate = self.gates[key] = ShardGate(shard_share(self.settings.per_host_concurrency, self.shards, shard),
                                               self.settings.per_host_rate / self.shards, phase=shard / self.shards)
        breaker = self.breakers.get(key[0])
        if breaker is None:
            s = self.settings
            breaker = self.breakers[key[0]] = CircuitBreaker(s.circuit_threshold, s.circuit_cooldown, s.circuit_max_cooldown)
        async with gate.semaphore:
            deadline = time.monotonic() + self.settings.record_budget
            try:
                async with asyncio.timeout(self.settings.record_budget):
                    body, ext, mime, attempts = await self._fetch_with_retries(record, gate, breaker, deadline)
            except Failure as failure:
                return failed(record, failure.status, failure.message), failure.attempts
            except TimeoutError:
                return failed(record, Status.FAILED_TIMEOUT, f"record time budget of {self.settings.record_budget:.0f} s exceeded"), 0
        rel = f"{folder}/{record.basename}.{ext}"
        try:
            size, sha = await self._run(self.write, rel, body, mime)
        except Exception as exc:  # noqa: BLE001 - any store error is a write failure
            return failed(record, Status.FAILED_WRITE, f"cannot write {self.store.uri(rel)}: {exc}"), attempts
        return record.replace(status=Status.DOWNLOADED, path=rel, bytes=size, sha256=sha, content_type=mime, error=""), attempts

    def write(self, rel: str, body: bytes, mime: str) -> tuple[int, str]:
        """Writes ``body`` at ``rel``; (size, sha256) of the file that is there afterwards."""
        sha = hashlib.sha256(body).hexdigest()
        if self.store.write_atomic(rel, body, mime, {"sha256": sha}):
            return len(body), sha
        # A create-only write kept an object another attempt wrote first: describe what it holds, not what we sent.
        return self.store.describe(rel)

    async def _fetch_with_retries(self, record: MediaRecord, gate: ShardGate, breaker: CircuitBreaker,
                                  deadline: float) -> tuple[bytes, str, str, int]:
        s = self.settings
        try:
            url = URL(record.url.strip())
        except (ValueError, TypeError) as exc:
            raise Failure(Status.FAILED_INVALID_URL, f"invalid URL: {exc}") from None
        attempt = 0
        while True:
            attempt += 1
            wait = breaker.wait_time()
            if wait:
                if time.monotonic() + wait > deadline:
                    message = f"host {url_host(record.url)} keeps failing: circuit open for {wait:.0f} s more"
                    raise Failure(Status.FAILED_CONNECTION, message, attempts=attempt - 1)
                await asyncio.sleep(wait)
            await gate.rate.wait()
            try:
                async with self.global_slots:
                    body, ext, mime = await self._attempt(url, record.media_type)
                breaker.record(True)
                return body, ext, mime, attempt
            except Failure as failure:
                failure.attempts = attempt
                if failure.retryable:
                    breaker.record(False)
                if not failure.retryable or attempt > s.max_retries:
                    raise
                delay = min(s.backoff_max, s.backoff_base * 2 ** (attempt - 1)) * (0.5 + random.random())
                if failure.retry_after is not None:
                    if time.monotonic() + failure.retry_after + s.timeout > deadline:
                        failure.message += f" (Retry-After {failure.retry_after:.0f} s is beyond this record's time budget)"
                        raise
                    delay = max(delay, failure.retry_after)
                await asyncio.sleep(delay)

    async def _attempt(self, url: URL, media_type: str) -> tuple[bytes, str, str]:
        try:
            async with asyncio.timeout(self.settings.timeout):
                return await self._get_following_redirects(url, media_type)
        except TimeoutError:
            message = f"no complete answer within --timeout {self.settings.timeout:g} s"
            raise Failure(Status.FAILED_TIMEOUT, message, retryable=True) from None
        except RefusedAddress as exc:
            raise Failure(Status.FAILED_REFUSED, str(exc)) from None
        except aiohttp.ClientPayloadError as exc:
            if "ContentLength" in repr(exc) or "Not enough data to satisfy content length" in str(exc):
                raise Failure(Status.FAILED_TRUNCATED, f"body shorter than its Content-Length: {exc}", retryable=True) from None
            raise Failure(Status.FAILED_CONNECTION, f"connection broken mid-body: {exc}", retryable=True) from None
        except aiohttp.InvalidURL as exc:
            raise Failure(Status.FAILED_INVALID_URL, f"invalid URL: {exc}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise Failure(Status.FAILED_CONNECTION, f"{type(exc).__name__}: {exc}", retryable=True) from None

    async def _get_following_redirects(self, url: URL, media_type: str) -> tuple[bytes, str, str]:
        s = self.settings
        if not url.scheme or not url.host:
            raise Failure(Status.FAILED_INVALID_URL, f"not an absolute URL: {url}")
        for _hop in range(s.max_redirects + 1):
            if url.scheme not in ("http", "https"):
                raise Failure(Status.FAILED_REFUSED, f"scheme {url.scheme or '(none)'!r} not allowed (only http/https): {url}")
            if not url.host:
                raise Failure(Status.FAILED_INVALID_URL, f"no host in URL {url}")
            if url.user is not None or url.password is not None:
                # ``http://trusted.org@other-host/`` misleads readers, and aiohttp would send the user info as credentials.
                raise Failure(Status.FAILED_REFUSED, f"user info in a URL is refused: {url.with_user(None)}")
            await check_host(url.host, url.port or 0, self.policy, self.resolver)
            async with self.session.get(url, allow_redirects=False) as response:
                if response.status in REDIRECT_CODES:
                    location = response.headers.get("Location")
                    if not location:
                        raise Failure(Status.FAILED_HTTP, f"HTTP {response.status} without a Location header")
                    try:
                        url = url.join(URL(location))
                    except ValueError as exc:
                        raise Failure(Status.FAILED_INVALID_URL, f"bad redirect location {location!r}: {exc}") from None
                    continue
                if response.status != 200:
                    retryable = response.status >= 500 or response.status in RETRYABLE_HTTP
                    raise Failure(Status.FAILED_HTTP, f"HTTP {response.status} {response.reason or ''}".strip(), retryable=retryable,
                                  retry_after=parse_retry_after(response.headers.get("Retry-After")))
                if response.content_length is not None and response.content_length > s.max_bytes:
                    raise Failure(Status.FAILED_TOO_LARGE, f"Content-Length {response.content_length} exceeds --max_bytes {s.max_bytes}")
                chunks = []
                received = 0
                async for chunk in response.content.iter_chunked(1 << 16):
                    received += len(chunk)
                    if received > s.max_bytes:
                        raise Failure(Status.FAILED_TOO_LARGE, f"body exceeds --max_bytes {s.max_bytes}")
                    chunks.append(chunk)
                body = b"".join(chunks)
                try:
                    ext, mime = classify(body, media_type)
                except NotMedia as exc:
                    raise Failure(Status.FAILED_NOT_MEDIA, f"{exc} (server said {response.content_type or 'no type'})") from None
                return body, ext, mime
        raise Failure(Status.FAILED_HTTP, f"more than {s.max_redirects} redirects")


def failed(record: MediaRecord, status: str, error: str) -> MediaRecord:
    return record.replace(status=status, error=error, path="", bytes=0, sha256="", content_type="")


