"""GBIF occurrence-download endpoints for the fake GBIF API, with fault injection.

    GET  /v1/occurrence/download/{key or DOI}     → metadata JSON shaped like GBIF's
    GET  /v1/occurrence/download/request/{key}.zip → the archive bytes (with Content-Length)
    POST /v1/occurrence/download/request          → (basic auth) a new download's key, as text;
         its status is PREPARING, then RUNNING, for ``polls_before_ready`` status reads, then SUCCEEDED

``download_routes(downloads, faults)`` returns a callable for ``FakeGbifApi(extra_routes=[...])``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

TRUNCATE = "truncate"  # full Content-Length, half the body, then the connection closes
SERVER_ERROR = "500"
UNAVAILABLE = "503"


@dataclasses.dataclass
class FakeDownload:
    """One download GBIF knows: its key, DOI, archive and status."""

    key: str
    archive: bytes | Path
    doi: str = ""
    status: str = "SUCCEEDED"
    size: int | None = None  # the size the metadata announces; default the archive's real size
    format: str = "DWCA"
    created: str = "2021-10-14T10:11:44.853+00:00"
    total_records: int = 0
    license: str = "http://creativecommons.org/licenses/by-nc/4.0/legalcode"

    def body(self) -> bytes:
        return self.archive if isinstance(self.archive, bytes) else Path(self.archive).read_bytes()

    def metadata(self, base_url: str) -> dict[str, Any]:
        size = self.size if self.size is not None else len(self.body())
        return {
            "key": self.key,
            "doi": self.doi,
            "license": self.license,
            "request": {
                "predicate": {"type": "equals", "key": "ELEVATION", "value": "9500", "matchCase": False},
                "sendNotification": False,
                "format": self.format,
                "type": "OCCURRENCE",
            },
            "created": self.created,
            "modified": self.created,
            "eraseAfter": "2022-04-14T10:11:44.797+00:00",
            "status": self.status,
            "downloadLink": f"{base_url}/v1/occurrence/download/request/{self.key}.zip",
            "size": size,
            "totalRecords": self.total_records,
            "numberDatasets": 1,
        }


@dataclasses.dataclass
class DownloadFaults:
    """Shared with the test: what the server saw, and faults to inject into the next zip requests."""

    zip_faults: list[str] = dataclasses.field(default_factory=list)  # consumed one per zip request
    requests: Counter = dataclasses.field(default_factory=Counter)  # "metadata" / "zip" / "request" → count
    user_agents: list[str] = dataclasses.field(default_factory=list)
    download_requests: list[dict] = dataclasses.field(default_factory=list)  # bodies of accepted POSTs


def download_routes(
    downloads: Iterable[FakeDownload],
    faults: DownloadFaults | None = None,
    *,
    requestable: FakeDownload | None = None,
    credentials: tuple[str, str] = ("gbif-user", "gbif-password"),
    polls_before_ready: int = 2,
) -> Callable[[web.Application], None]:
    """A callable that adds the download endpoints (under /v1) to an aiohttp application.

    ``requestable`` is the download a POSTed request creates (its status starts PREPARING).
    """
    by_key = {d.key: d for d in downloads}
    by_doi = {d.doi.lower(): d for d in by_key.values() if d.doi}
    seen = faults if faults is not None else DownloadFaults()
    pending: dict[str, int] = {}  # requested key → status reads left before SUCCEEDED

    def base_url(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    async def archive(request: web.Request) -> web.StreamResponse:
        seen.requests["zip"] += 1
        seen.user_agents.append(request.headers.get("User-Agent", ""))
        name = request.match_info["name"]
        download = by_key.get(name.removesuffix(".zip")) if name.endswith(".zip") else None
        if download is None:
            raise web.HTTPNotFound(text="no such download")
        fault = seen.zip_faults.pop(0) if seen.zip_faults else ""
        if fault in (SERVER_ERROR, UNAVAILABLE):
            return web.Response(status=int(fault), text="injected failure")
        body = download.body()
        response = web.StreamResponse(headers={"Content-Type": "application/zip", "Content-Length": str(len(body))})
        await response.prepare(request)
        if fault == TRUNCATE:
            await response.write(body[: len(body) // 2])
            await asyncio.sleep(0.05)
            request.transport.close()  # the client sees fewer bytes than Content-Length promised
            return response
        await response.write(body)
        await response.write_eof()
        return response

    async def metadata(request: web.Request) -> web.Response:
        seen.requests["metadata"] += 1
        seen.user_agents.append(request.headers.get("User-Agent", ""))
        ident = request.match_info["ident"]
        download = by_key.get(ident) or by_doi.get(ident.lower())
        if download is None:
            return web.json_response({"error": f"download {ident} not found"}, status=404)
        body = download.metadata(base_url(request))
        if pending.get(download.key, 0) > 0:
            pending[download.key] -= 1
            body["status"] = "PREPARING" if pending[download.key] >= polls_before_ready / 2 else "RUNNING"
        return web.json_response(body)

    async def request_download(request: web.Request) -> web.Response:
        seen.requests["request"] += 1
        expected = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401, text="Unauthorized")
        body = await request.json()
        if requestable is None or not isinstance(body.get("predicate"), dict):
            return web.Response(status=400, text="no predicate")
        seen.download_requests.append(body)
        by_key[requestable.key] = requestable
        pending[requestable.key] = polls_before_ready
        return web.Response(status=201, text=requestable.key, content_type="text/plain")

    def install(app: web.Application) -> None:
        # The zip route first: the metadata route's pattern also matches "request/x.zip".
        app.router.add_post("/v1/occurrence/download/request", request_download)
        app.router.add_get("/v1/occurrence/download/request/{name}", archive)
        app.router.add_get("/v1/occurrence/download/{ident:.+}", metadata)

    return install
