"""A fake GBIF occurrence API (aiohttp on 127.0.0.1) for tests, benchmarks and the offline demo.

    with FakeGbifApi(SyntheticOccurrences([5352251], ["dataset-a", "dataset-b"], per_stream=40)) as api:
        requests.get(f"{api.base_url}/occurrence/search", params={"speciesKey": 5352251, "limit": 0})

Behaves like ``api.gbif.org/v1`` where the project depends on it:

- ``GET /v1/occurrence/search``: repeated parameters are OR-ed, different parameters AND-ed;
  filters on any field the store holds (``speciesKey``, ``taxonKey``, ``datasetKey``,
  ``country``/``countryCode``, ``basisOfRecord``, ``publishingOrgKey``, ...), ``year`` (and
  ``month``/``day``) as a value or an inclusive range ``1990,2000`` (``*`` open), and
  ``mediaType`` (has a media item of that type). Unknown parameters are ignored, as GBIF does.
  ``limit`` defaults to 20 and is silently capped at 300; ``offset + limit > 100000`` is an
  HTTP 400; ``limit=0`` returns only ``count`` and facets. ``facet=FIELD`` (repeatable) with
  ``facetLimit`` (default 10), ``facetOffset``, ``facetMincount``.
- ``GET /v1/occurrence/{key}``.
- Recorded real pages are served verbatim for the query they were recorded for
  (``recorded_pages=[".../occurrence_search_taxonKey_3329049_offset_0.json"]``, or a mapping
  of path to its query parameters); ``occurrence_{key}.json`` files answer ``/occurrence/{key}``.
  Their occurrences also join the store (``RecordedOccurrences``), so other queries see them.
- Fault injection: ``api.inject("/v1/occurrence/search", status=429, retry_after=1, times=2)``,
  ``status=500``, ``delay=2.0``, ``drop=True`` (connection closed without an answer),
  ``truncate=True`` (body cut short of its Content-Length).
- ``api.requests``: every request received (method, path, query multidict), to count calls.
- ``extra_routes``: callables given the ``aiohttp.web.Application`` before it starts, so other
  fakes (e.g. GBIF downloads) share the server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from beam_gbif.testing.search_index import (
    RECORDED_OCCURRENCE_NAME,
    RECORDED_SEARCH_NAME,
    BadRequest,
    CombinedStore,
    RecordedOccurrences,
    SearchIndex,
    facet_name,
    query_filters,
    query_text,
)
from beam_gbif.testing.serving import AppThread

MAX_LIMIT = 300
MAX_OFFSET_PLUS_LIMIT = 100_000
DEFAULT_LIMIT = 20
DEFAULT_FACET_LIMIT = 10

# Search parameters whose name differs from the occurrence field they filter.
@dataclasses.dataclass
class Fault:
    path_prefix: str
    times: int
    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0
    drop: bool = False
    truncate: bool = False
    body: str = ""
    match_query: tuple[tuple[str, str], ...] = ()

    def applies_to(self, path: str, query: MultiDictProxy) -> bool:
        return path.startswith(self.path_prefix) and self.times > 0 and all(query.get(k) == v for k, v in self.match_query)


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: MultiDict


@dataclasses.dataclass(frozen=True)
class _RecordedPage:
    filters: tuple
    offset: int
    body: dict


class FakeGbifApi:
    """The fake API server; see the module docstring. Start with ``with`` or ``start()``/``stop()``."""

    def __init__(
        self,
        occurrences: Any = None,
        *,
        recorded_pages: Sequence[str | Path] | Mapping[str | Path, Mapping[str, Any]] = (),
        extra_routes: Sequence[Callable[[web.Application], None]] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._pages: list[_RecordedPage] = []
        self._recorded_occurrences: dict[int, dict] = {}
        recorded_results: list[dict] = []
        items = recorded_pages.items() if isinstance(recorded_pages, Mapping) else ((p, None) for p in recorded_pages)
        for path, params in items:
            recorded_results.extend(self._load_recorded(Path(path), params))
        if occurrences is None:
            occurrences = RecordedOccurrences(recorded_results)
        elif recorded_results:
            occurrences = CombinedStore([occurrences, RecordedOccurrences(recorded_results)])
        self.store = occurrences
        self.index = SearchIndex(occurrences)
        self._extra_routes = list(extra_routes)
        self._host, self._port = host, port
        self._faults: list[Fault] = []
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server: AppThread | None = None
        self.app: web.Application | None = None
        self.port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("FakeGbifApi is not started")
        return f"http://{self._host}:{self.port}/v1"

    def start(self) -> FakeGbifApi:
        if self._server is None:
            server = AppThread(self._make_app, self._host, self._port, name="fake-gbif-api")
            self.port = server.start()
            self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        self._server = None
        self.port = None

    def __enter__(self) -> FakeGbifApi:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._log_and_inject])
        app.router.add_get("/v1/occurrence/search", self._search)
        app.router.add_get(r"/v1/occurrence/{key:\d+}", self._occurrence)
        for add_routes in self._extra_routes:
            add_routes(app)
        self.app = app
        return app

    # -- test controls ---------------------------------------------------------------------

    def inject(
        self,
        path_prefix: str = "/v1/occurrence/search",
        *,
        times: int = 1,
        status: int | None = None,
        retry_after: float | str | None = None,
        delay: float = 0.0,
        drop: bool = False,
        truncate: bool = False,
        body: str = "",
        match_query: Mapping[str, Any] | None = None,
    ) -> None:
        """Make the next ``times`` requests whose path starts with ``path_prefix`` misbehave.

        ``match_query`` narrows the fault to requests with these parameter values (e.g. ``{"offset": 300}``).
        """
        if status is None and not (delay or drop or truncate):
            raise ValueError("inject() needs one of status, delay, drop or truncate")
        with self._lock:
            match = tuple((str(k), query_text(v)) for k, v in (match_query or {}).items())
            self._faults.append(Fault(path_prefix, times, status, None if retry_after is None else str(retry_after), delay, drop,
                                      truncate, body, match))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def search_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/v1/occurrence/search"]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- handlers --------------------------------------------------------------------------

    def _take_fault(self, path: str, query: MultiDictProxy) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.applies_to(path, query):
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    @web.middleware
    async def _log_and_inject(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        with self._lock:
            self._requests.append(RecordedRequest(request.method, request.path, MultiDict(request.query)))
        fault = self._take_fault(request.path, request.query)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.drop:
                request.transport.close()
                return web.Response(status=500)
            if fault.status is not None:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                text = fault.body or f"injected HTTP {fault.status} by FakeGbifApi"
                return web.Response(status=fault.status, text=text, headers=headers)
        try:
            response = await handler(request)
        except BadRequest as exc:
            return web.json_response({"message": str(exc)}, status=400)
        if fault is not None and fault.truncate:
            return await self._truncated(request, response)
        return response

    @staticmethod
    async def _truncated(request: web.Request, response: web.Response) -> web.StreamResponse:
        body = response.body or b""
        stream = web.StreamResponse(status=response.status, headers={"Content-Type": response.content_type})
        stream.content_length = len(body)
        await stream.prepare(request)
        await stream.write(body[: len(body) // 2])
        request.transport.close()
        return stream

    async def _search(self, request: web.Request) -> web.Response:
        query = request.query
        offset = _int_parameter(query, "offset", 0)
        limit = min(_int_parameter(query, "limit", DEFAULT_LIMIT), MAX_LIMIT)
        if offset + limit > MAX_OFFSET_PLUS_LIMIT:
            raise BadRequest(f"Max offset of {MAX_OFFSET_PLUS_LIMIT - limit} exceeded: offset {offset} + limit {limit} "
                             f"must not exceed {MAX_OFFSET_PLUS_LIMIT}")
        recorded = self._recorded_page(query, offset, limit)
        if recorded is not None:
            return web.json_response(recorded)
        indices = self.index.matching(query)
        count = int(len(indices))
        page = indices[offset: offset + limit] if limit else indices[:0]
        body = {
            "offset": offset,
            "limit": limit,
            "endOfRecords": offset + limit >= count,
            "count": count,
            "results": [self.store.occurrence(int(i)) for i in page],
            "facets": self._facets(query, indices),
        }
        return web.json_response(body)

    def _facets(self, query: MultiDictProxy, indices: np.ndarray) -> list[dict]:
        facet_limit = _int_parameter(query, "facetLimit", DEFAULT_FACET_LIMIT)
        facet_offset = _int_parameter(query, "facetOffset", 0)
        facet_mincount = _int_parameter(query, "facetMincount", 0)
        facets = []
        for field in dict.fromkeys(query.getall("facet", [])):
            pairs = [p for p in self.index.facet_counts(indices, field) if p[1] >= facet_mincount]
            counts = [{"name": name, "count": count} for name, count in pairs[facet_offset: facet_offset + facet_limit]]
            facets.append({"field": facet_name(field), "counts": counts})
        return facets

    async def _occurrence(self, request: web.Request) -> web.Response:
        key = int(request.match_info["key"])
        recorded = self._recorded_occurrences.get(key)
        if recorded is not None:
            return web.json_response(recorded)
        index = self.store.index_of_key(key)
        if index is None:
            return web.Response(status=404, text=f"Occurrence {key} not found")
        return web.json_response(self.store.occurrence(index))

    # -- recorded pages --------------------------------------------------------------------

    def _load_recorded(self, path: Path, params: Mapping[str, Any] | None) -> list[dict]:
        body = json.loads(path.read_text(encoding="utf-8"))
        match = RECORDED_OCCURRENCE_NAME.search(path.name)
        if params is None and match and "results" not in body:
            self._recorded_occurrences[int(match.group("key"))] = body
            return [body]
        if params is None:
            match = RECORDED_SEARCH_NAME.search(path.name)
            if not match:
                raise ValueError(f"cannot tell which query {path.name} answers: name it occurrence_search_FIELD_VALUE_offset_N.json "
                                 "or pass recorded_pages as a mapping of path to query parameters")
            params = {match.group("field"): match.group("value")}
        query = MultiDict()
        for name, value in params.items():
            for item in value if isinstance(value, (list, tuple)) else [value]:
                query.add(name, query_text(item))
        self._pages.append(_RecordedPage(query_filters(query), int(body.get("offset", 0)), body))
        return list(body.get("results", []))

    def _recorded_page(self, query: MultiDictProxy, offset: int, limit: int) -> dict | None:
        filters = query_filters(query)
        for page in self._pages:
            if page.filters == filters and page.offset == offset and limit > 0:
                if limit >= len(page.body.get("results", [])):
                    return page.body
                results = page.body["results"][:limit]
                return {**page.body, "limit": limit, "endOfRecords": offset + limit >= page.body.get("count", 0), "results": results}
        return None


def _int_parameter(query: MultiDictProxy, name: str, default: int) -> int:
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"Invalid {name}: {text!r} is not an integer") from None
    if value < 0:
        raise BadRequest(f"Invalid {name}: {value} is negative")
    return value
