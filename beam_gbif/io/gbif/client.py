"""A small, polite GBIF REST client on ``requests``.

- identifiable User-Agent, connect and read timeouts;
- retries with exponential backoff and full jitter on 5xx, 429 (honouring ``Retry-After`` in
  seconds or as an HTTP date, capped), connection errors, timeouts and truncated bodies;
  any other 4xx fails at once;
- a final failure raises ``GbifApiError`` naming the URL, the status and a snippet of the body;
- at most ``max_concurrency`` requests in flight per process and API (shared by every client
  of that API in the process, e.g. several DoFn threads of one worker);
- picklable: the ``requests.Session`` is created lazily, so Beam can ship the client to workers.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, BinaryIO
from urllib.parse import urlencode, urlsplit

import requests

from beam_gbif import DEFAULT_USER_AGENT
from beam_gbif.core.errors import OptionError
from beam_gbif.core.http import parse_retry_after

DEFAULT_GBIF_API_URL = "https://api.gbif.org/v1"

_log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
_RETRYABLE_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
_BODY_SNIPPET = 300

Params = Mapping[str, Any] | Sequence[tuple[str, Any]]

_semaphores: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_semaphores_lock = threading.Lock()


def _api_semaphore(api_url: str, limit: int) -> threading.BoundedSemaphore:
    with _semaphores_lock:
        return _semaphores.setdefault((api_url, limit), threading.BoundedSemaphore(limit))


def check_credentials_url(url: str) -> None:
    """Raises OptionError unless GBIF credentials may be sent to ``url``: https, or plain http to a loopback
    address (a local test server), decided from the URL alone, before any request."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False  # a name: "localhost" too, since only the resolver would say where it points
    if parts.scheme == "http" and loopback:
        return
    where = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")  # never the URL's user info
    raise OptionError(f"--gbif_api_url {where}: GBIF_USER/GBIF_PWD are sent only over https "
                      "(plain http only to a loopback address such as 127.0.0.1, for tests)")


class GbifApiError(RuntimeError):
    """A GBIF API request failed for good. ``status`` is None when no HTTP answer came."""

    def __init__(self, message: str, *, url: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.body = body


def short_cause(exc: BaseException) -> str:
    """The operating system's words for a failed connection ("connection refused"), else the error itself."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror.lower()
        seen = seen.__cause__ or seen.__context__
    return str(exc)


def one_line(text: str, limit: int = 200) -> str:
    """An answer's body for an error line: whitespace collapsed, cut at ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


class _Retryable(Exception):
    def __init__(self, description: str, status: int | None = None, body: str = "", retry_after: float | None = None):
        super().__init__(description)
        self.status = status
        self.body = body
        self.retry_after = retry_after


def _with_params(url: str, params: Params | None) -> str:
    if not params:
        return url
    pairs = params.items() if isinstance(params, Mapping) else params
    flat = [(k, v) for k, value in pairs for v in (value if isinstance(value, (list, tuple)) else [value])]
    return f"{url}?{urlencode(flat)}"


class GbifClient:
    """Polite client of one GBIF API (``api_url``, e.g. ``https://api.gbif.org/v1``)."""

    def __init__(
        self,
        api_url: str = DEFAULT_GBIF_API_URL,
        user_agent: str = DEFAULT_USER_AGENT,
        *,
        timeout: tuple[float, float] | float = (10.0, 60.0),
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_max: float = 120.0,
        max_concurrency: int = 4,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if max_concurrency < 1:
            raise ValueError(f"the GBIF API concurrency must be at least 1, got {max_concurrency}")
        self.api_url = api_url.rstrip("/")
        self.user_agent = user_agent
        self.timeout = timeout if isinstance(timeout, tuple) else (float(timeout), float(timeout))
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.max_concurrency = max_concurrency
        self._sleep = sleep
        self._session: requests.Session | None = None
        # What this client did, for Beam counters and benchmarks (read in the caller's thread).
        self.requests_made = 0
        self.retries = 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_session"] = None
        if state["_sleep"] is time.sleep:
            state["_sleep"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._sleep is None:
            self._sleep = time.sleep

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            session.headers["User-Agent"] = self.user_agent
            session.headers["Accept"] = "application/json"
            self._session = session
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def url(self, path: str) -> str:
        """``path`` relative to the API base (``occurrence/search``), or an absolute http(s) URL as is."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.api_url}/{path.lstrip('/')}"

    # -- JSON API --------------------------------------------------------------------------

    def get_json(self, path: str, params: Params | None = None) -> Any:
        """GET ``path`` and decode its JSON body, with retries (see the module docstring)."""
        url = self.url(path)
        full_url = _with_params(url, params)

        def attempt() -> Any:
            response = self.session.get(url, params=params, timeout=self.timeout)
            self._check(response, full_url)
            try:
                return response.json()
            except ValueError:
                raise _Retryable("the body is not valid JSON", response.status_code, response.text[:_BODY_SNIPPET]) from None

        return self._with_retries(full_url, attempt)

    def search(self, params: Params) -> dict[str, Any]:
        """One ``occurrence/search`` page (or count/facets with ``limit=0``)."""
        return self.get_json("occurrence/search", params)

    def count(self, query: Mapping[str, Any]) -> int:
        """Number of occurrences matching ``query`` (one ``limit=0`` request)."""
        return int(self.search({**query, "limit": 0})["count"])

    def facet_counts(self, query: Mapping[str, Any], field: str, *, page_size: int = 1000, mincount: int = 1) -> dict[str, int]:
        """Occurrence count per value of ``field`` among those matching ``query`` (facet calls, paged)."""
        counts: dict[str, int] = {}
        offset = 0
        while True:
            params = {**query, "limit": 0, "facet": field, "facetLimit": page_size, "facetOffset": offset, "facetMincount": mincount}
            facets = self.search(params).get("facets") or []
            values = facets[0]["counts"] if facets else []
            for item in values:
                counts[str(item["name"])] = counts.get(str(item["name"]), 0) + int(item["count"])
            if len(values) < page_size:
                return counts
            offset += page_size

    # -- files -----------------------------------------------------------------------------

    def download(self, url: str, fileobj: BinaryIO, progress: Callable[[int], None] | None = None, *,
                 chunk_size: int = 1 << 20) -> int:
        """Stream ``url`` (absolute or API-relative) into ``fileobj``; returns the bytes written.

        Retried like the JSON calls; a retry after a partial body rewinds ``fileobj`` when it is
        seekable (else the partial transfer is a final error). A body shorter than its
        ``Content-Length`` is a truncation, never a silent short file. ``progress`` gets the
        running byte count.
        """
        url = self.url(url)
        start = fileobj.tell() if fileobj.seekable() else None

        def attempt() -> int:
            if start is not None:
                fileobj.seek(start)
                fileobj.truncate()
            written = 0
            with self.session.get(url, stream=True, timeout=self.timeout, headers={"Accept": "*/*"}) as response:
                self._check(response, url)
                expected = response.headers.get("Content-Length")
                try:
                    for chunk in response.iter_content(chunk_size):
                        fileobj.write(chunk)
                        written += len(chunk)
                        if progress is not None:
                            progress(written)
                except _RETRYABLE_ERRORS as exc:
                    if start is None and written:
                        raise GbifApiError(f"GBIF download {url} broke after {written} bytes: {exc}", url=url) from exc
                    raise
                if expected is not None and expected.isdigit() and written != int(expected):
                    if start is None:
                        message = f"GBIF download {url} truncated: {written} of {expected} bytes"
                        raise GbifApiError(message, url=url, status=response.status_code)
                    raise _Retryable(f"truncated body: {written} of {expected} bytes", response.status_code)
            return written

        return self._with_retries(url, attempt)

    # -- retry machinery -------------------------------------------------------------------

    def _check(self, response: requests.Response, url: str) -> None:
        status = response.status_code
        if status < 400:
            return
        body = response.text[:_BODY_SNIPPET]
        if status in RETRYABLE_STATUSES:
            raise _Retryable(f"HTTP {status}", status, body, parse_retry_after(response.headers.get("Retry-After")))
        raise GbifApiError(f"GBIF API request failed: HTTP {status} for {url}: {one_line(body)}; check --query and --gbif_api_url",
                           url=url, status=status, body=body)

    def _gave_up(self, url: str, retry: _Retryable, tries: int) -> GbifApiError:
        """The final error after retries, as one line a person acts on (the raw cause stays the __cause__)."""
        if retry.status is None:
            message = (f"cannot reach the GBIF API at {self.api_url} ({retry}) after {tries} attempt(s) for {url}; "
                       "check --gbif_api_url and the network, then run again")
        else:
            body = one_line(retry.body)
            message = (f"GBIF API request failed after {tries} attempt(s): {retry} for {url}"
                       + (f": {body}" if body else "") + "; GBIF may be busy: run again later")
        return GbifApiError(message, url=url, status=retry.status, body=retry.body)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        # Full jitter: spreads retries of many workers evenly instead of in synchronised waves.
        return random.uniform(0.0, min(self.backoff_max, self.backoff_base * 2**attempt))

    def _with_retries(self, url: str, attempt: Callable[[], Any]) -> Any:
        semaphore = _api_semaphore(self.api_url, self.max_concurrency)
        for number in range(self.max_retries + 1):
            self.requests_made += 1
            try:
                with semaphore:
                    return attempt()
            except (_Retryable, *_RETRYABLE_ERRORS) as exc:
                retry = exc if isinstance(exc, _Retryable) else _Retryable(f"{type(exc).__name__}: {short_cause(exc)}")
                if number == self.max_retries:
                    raise self._gave_up(url, retry, self.max_retries + 1) from exc
                delay = self._delay(number, retry.retry_after)
                _log.info("GBIF API %s for %s; retry %d/%d in %.1f s", retry, url, number + 1, self.max_retries, delay)
                self.retries += 1
                self._sleep(delay)
        raise AssertionError("unreachable")
