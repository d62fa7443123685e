"""One HTTP attempt at one media URL: redirects, the address check, timeouts by phase, the body within its memory lease.

Every failure becomes a ``Failure`` that says whether it is worth retrying and whether it is a
signal about the host (refused or reset before an answer, connect timeout, 5xx, 429) — only those
count toward the host's circuit breaker; an answer about one URL (404, HTML, a short body) never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
from yarl import URL

from beam_gbif.core.http import parse_retry_after
from beam_gbif.core.records import Status
from beam_gbif.core.sniff import NotMedia, classify
from beam_gbif.io.budget import Lease
from beam_gbif.io.hosts import CircuitBreaker
from beam_gbif.io.safety import AddressPolicy, CheckedResolver, RefusedAddress, check_host

if TYPE_CHECKING:
    from beam_gbif.io.fetch import DownloadSettings

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
RETRYABLE_HTTP = frozenset({408, 425, 429})


class Failure(Exception):
    def __init__(self, status: str, message: str, retryable: bool = False, retry_after: float | None = None,
                 attempts: int = 0, host_signal: bool = False, http_status: int = 0) -> None:
        super().__init__(message)
        self.http_status = http_status  # the final answer's code, 0 if none came
        self.status = status
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = attempts
        self.host_signal = host_signal


@contextlib.asynccontextmanager
async def paused(*timeouts: asyncio.Timeout) -> AsyncIterator[None]:
    """Stops the clocks of ``timeouts`` while the block waits in a queue: queueing is never a timeout."""
    loop = asyncio.get_running_loop()
    whens = [t.when() for t in timeouts]
    for t in timeouts:
        if not t.expired():
            t.reschedule(None)
    started = loop.time()
    try:
        yield
    finally:
        spent = loop.time() - started
        for t, when in zip(timeouts, whens, strict=True):
            if when is not None and not t.expired():
                t.reschedule(when + spent)


@dataclasses.dataclass
class _Attempt:
    """One attempt's context: its first-byte limit, the clocks a queue pauses, its lease and the host's health."""

    first_byte: float
    clocks: tuple[asyncio.Timeout, ...]
    lease: Lease
    health: CircuitBreaker
    deadline: float = 0.0  # loop time at which the attempt ends (--timeout after its start)
    reading_body: bool = False

    def limit_to(self, when: float) -> None:
        """Moves the attempt's one timer (``clocks[-1]``) to ``when``: a first-byte limit, or back to ``deadline``."""
        limit = self.clocks[-1]
        if limit.when() != when:
            limit.reschedule(when)


class HttpFetcher:
    """The aiohttp session of one engine and the attempts made with it."""

    def __init__(self, settings: DownloadSettings, policy: AddressPolicy, resolver: CheckedResolver | None = None) -> None:
        self.settings = settings
        self.policy = policy
        self.session: aiohttp.ClientSession | None = None
        self._given_resolver = resolver  # tests inject one (scripted DNS answers); else one per open()
        self.resolver: CheckedResolver | None = None

    async def open(self) -> None:
        s = self.settings
        # The connector resolves through the same checking resolver as check_host: an answer that
        # changes between the check and the connection (DNS rebinding) is checked again.
        self.resolver = self._given_resolver or CheckedResolver(self.policy)
        connector = aiohttp.TCPConnector(limit=s.max_concurrency, limit_per_host=0, resolver=self.resolver, ttl_dns_cache=300)
        # No sock_read: each attempt's own clock bounds the read, and that clock stands still while a
        # body waits for memory (aiohttp's read timer would not).
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=s.timeout, sock_read=None)
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar(),
                                             headers={"User-Agent": s.user_agent, "Accept": "*/*"})

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def attempt(self, url: URL, media_type: str, health: CircuitBreaker, clock: asyncio.Timeout,
                      lease: Lease) -> tuple[bytes, str, str]:
        """(body, ext, mime) of one attempt; the body's bytes stay reserved on ``lease``."""
        s = self.settings
        # A host that just timed out gets a short first-byte timeout until it answers again, so a
        # dead host does not cost a full --timeout for every one of its records.
        first_byte = min(s.timeout, s.slow_host_first_byte) if health.slow else s.timeout
        state = _Attempt(first_byte, (clock,), lease, health)
        try:
            # One timer per attempt: each request's first-byte limit, then the attempt's --timeout.
            state.deadline = asyncio.get_running_loop().time() + s.timeout
            async with asyncio.timeout_at(state.deadline) as limit:
                state.clocks = (clock, limit)
                return await self._get_following_redirects(url, media_type, state)
        except aiohttp.ConnectionTimeoutError:
            health.timed_out()
            raise Failure(Status.FAILED_TIMEOUT, f"no connection within --timeout {s.timeout:g} s", retryable=True,
                          host_signal=True) from None
        except TimeoutError:
            if state.reading_body:
                raise Failure(Status.FAILED_TIMEOUT, f"body not complete within --timeout {s.timeout:g} s", retryable=True) from None
            health.timed_out()
            shortened = " (shortened: this host timed out before)" if first_byte < s.timeout else ""
            raise Failure(Status.FAILED_TIMEOUT, f"no answer within {first_byte:g} s{shortened}", retryable=True) from None
        except RefusedAddress as exc:
            raise Failure(Status.FAILED_REFUSED, str(exc)) from None
        except aiohttp.ClientPayloadError as exc:
            if "ContentLength" in repr(exc) or "Not enough data to satisfy content length" in str(exc):
                raise Failure(Status.FAILED_TRUNCATED, f"body shorter than its Content-Length: {exc}", retryable=True) from None
            raise Failure(Status.FAILED_CONNECTION, f"connection broken mid-body: {exc}", retryable=True) from None
        except aiohttp.InvalidURL as exc:
            raise Failure(Status.FAILED_INVALID_URL, f"invalid URL: {exc}") from None
        except (aiohttp.ClientError, OSError) as exc:
            # Refused or reset before an answer says something about the host; mid-body, about this URL.
            raise Failure(Status.FAILED_CONNECTION, f"{type(exc).__name__}: {exc}", retryable=True,
                          host_signal=not state.reading_body) from None

    async def _get_following_redirects(self, url: URL, media_type: str, state: _Attempt) -> tuple[bytes, str, str]:
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
            state.limit_to(min(state.deadline, asyncio.get_running_loop().time() + state.first_byte))
            response = await self.session.get(url, allow_redirects=False)
            state.limit_to(state.deadline)
            state.health.answered()
            async with response:
                if response.status not in REDIRECT_CODES:
                    return await self._accept(response, media_type, state)
                location = response.headers.get("Location")
                if not location:
                    raise Failure(Status.FAILED_HTTP, f"HTTP {response.status} without a Location header")
                try:
                    url = url.join(URL(location))
                except ValueError as exc:
                    raise Failure(Status.FAILED_INVALID_URL, f"bad redirect location {location!r}: {exc}") from None
        raise Failure(Status.FAILED_HTTP, f"more than {s.max_redirects} redirects")

    async def _accept(self, response: aiohttp.ClientResponse, media_type: str, state: _Attempt) -> tuple[bytes, str, str]:
        s = self.settings
        if response.status != 200:
            host_signal = response.status >= 500 or response.status == 429
            raise Failure(Status.FAILED_HTTP, f"HTTP {response.status} {response.reason or ''}".strip(),
                          retryable=host_signal or response.status in RETRYABLE_HTTP, host_signal=host_signal,
                          retry_after=parse_retry_after(response.headers.get("Retry-After")), http_status=response.status)
        if response.content_length is not None and response.content_length > s.max_bytes:
            raise Failure(Status.FAILED_TOO_LARGE, f"Content-Length {response.content_length} exceeds --max_bytes {s.max_bytes}")
        body = await self._read_body(response, state)
        try:
            ext, mime = classify(body, media_type)
        except NotMedia as exc:
            raise Failure(Status.FAILED_NOT_MEDIA, f"{exc} (server said {response.content_type or 'no type'})") from None
        return body, ext, mime

    async def _read_body(self, response: aiohttp.ClientResponse, state: _Attempt) -> bytes:
        s = self.settings
        lease = state.lease
        # A decoded (gzip) body may be longer than its Content-Length: then the length is unknown.
        known = response.content_length if "Content-Encoding" not in response.headers else None
        size = known if known is not None else min(s.max_bytes, lease.budget.limit)
        if not lease.try_reserve(size):
            async with paused(*state.clocks):  # waiting for memory is queueing: it spends no attempt or record time
                await lease.reserve(size)
        state.reading_body = True
        chunks = []
        received = 0
        async for chunk in response.content.iter_chunked(1 << 16):
            received += len(chunk)
            if received > s.max_bytes:
                raise Failure(Status.FAILED_TOO_LARGE, f"body exceeds --max_bytes {s.max_bytes}")
            # Only a body that reserved the whole budget (it is alone) can outgrow its reservation.
            lease.cover(received)
            chunks.append(chunk)
        body = b"".join(chunks)
        chunks.clear()  # never hold a body twice
        lease.trim(len(body))
        return body
