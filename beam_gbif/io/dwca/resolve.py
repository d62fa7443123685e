"""Resolving ``--dwca DOI|KEY|PATH`` to a zip in the cache folder: GBIF's download metadata, the
download itself (resumable, size-checked), and reuse of a cached zip only when it reads whole.

A GBIF download is resolved through ``GET {api}/occurrence/download/{doi-or-key}`` and fetched
from ``{api}/occurrence/download/request/{key}.zip`` into ``--dwca_root_path`` (local folder or gs://).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from typing import Any, BinaryIO

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_gbif import DEFAULT_USER_AGENT, cache_home
from beam_gbif.io.dwca.meta import DwcaError, safe_member_name
from beam_gbif.io.gbif.client import DEFAULT_GBIF_API_URL, GbifApiError, GbifClient
from beam_gbif.io.store import join_uri, write_whole

log = logging.getLogger(__name__)

_DOI = re.compile(r"^(?:doi:|https?://(?:dx\.)?doi\.org/)?(10\.\d{4,9}/\S+)$", re.IGNORECASE)
DOWNLOAD_KEY = re.compile(r"^\d{7}-\d{15}$")  # what GBIF calls a download key: 0117522-200613084148143
_COPY_CHUNK = 1 << 20
UNCOMPRESSED = CompressionTypes.UNCOMPRESSED


def default_cache_root() -> str:
    """``$BEAM_GBIF_CACHE/dwca``, else ``$XDG_CACHE_HOME/beam-gbif/dwca``, else ``~/.cache/beam-gbif/dwca``."""
    return os.path.join(cache_home(), "dwca")


def classify_spec(spec: str) -> tuple[str, str]:
    """``("doi", "10.15468/dl.x")``, ``("key", "0117522-200613084148143")`` or ``("path", uri)``."""
    text = (spec or "").strip()
    if not text:
        raise DwcaError("--dwca is empty: give a download DOI, a download key, a local zip or a gs:// URI")
    doi = _DOI.match(text)
    if doi:
        return "doi", doi.group(1)
    if DOWNLOAD_KEY.match(text):
        return "key", text
    if text.startswith("gs://"):
        return "path", text
    return "path", os.path.abspath(os.path.expanduser(text))


def size_of(uri: str) -> int | None:
    """Size in bytes, None if absent."""
    try:
        if not FileSystems.exists(uri):
            return None
        return FileSystems.get_filesystem(uri).size(uri)
    except OSError:
        return None


def delete_quietly(uri: str) -> None:
    try:
        FileSystems.delete([uri])
    except Exception:  # noqa: BLE001 - best effort: an absent file is already what we want
        log.debug("could not delete %s", uri, exc_info=True)


def read_bytes(uri: str) -> bytes:
    with FileSystems.open(uri, compression_type=UNCOMPRESSED) as handle:
        return handle.read()


# --------------------------------------------------------------------------- GBIF HTTP


def fetch_download_metadata(client: GbifClient, doi_or_key: str) -> dict[str, Any]:
    """``GET {api}/occurrence/download/{doi-or-key}``; DwcaError for an unknown download or a failed request."""
    path = f"occurrence/download/{doi_or_key}"
    try:
        metadata = client.get_json(path)
    except GbifApiError as exc:
        if exc.status == 404:
            raise DwcaError(f"GBIF knows no download {doi_or_key!r} ({client.url(path)} answered 404)") from None
        raise DwcaError(f"GBIF download metadata for {doi_or_key} could not be read: {exc}") from None
    if not isinstance(metadata, dict) or not metadata.get("key"):
        raise DwcaError(f"GBIF download metadata for {doi_or_key} has no download key ({client.url(path)})")
    return metadata


def _check_downloadable(metadata: dict[str, Any], asked: str) -> None:
    status = metadata.get("status")
    if status != "SUCCEEDED":
        hint = {
            "PREPARING": "GBIF is still preparing it; try again later",
            "RUNNING": "GBIF is still preparing it; try again later",
            "SUSPENDED": "GBIF suspended it",
            "CANCELLED": "it was cancelled",
            "FAILED": "GBIF could not create it",
            "KILLED": "it was cancelled",
            "FILE_ERASED": "its file has been erased; request the download again",
        }.get(str(status), "only SUCCEEDED downloads can be read")
        raise DwcaError(f"GBIF download {asked} ({metadata.get('key')}) has status {status}, not SUCCEEDED: {hint}")
    download_format = (metadata.get("request") or {}).get("format")
    if download_format and download_format != "DWCA":
        raise DwcaError(f"GBIF download {asked} ({metadata.get('key')}) has format {download_format}, not DWCA (a Darwin Core Archive)")


def _progress_logger(what: str, expected: int | None) -> Callable[[int], None]:
    """A progress callback that logs the running byte count every few seconds."""
    last_log = [time.monotonic()]

    def progress(written: int) -> None:
        now = time.monotonic()
        if now - last_log[0] >= 5:
            last_log[0] = now
            share = f" of {expected / 1e6:.1f} MB ({100 * written / expected:.0f}%)" if expected else ""
            log.info("downloading %s: %.1f MB%s", what, written / 1e6, share)

    return progress


def download_archive(client: GbifClient, url: str, destination: str, expected_size: int | None) -> None:
    """Fetches ``url`` into ``destination`` so it appears whole or not at all; DwcaError when it cannot.

    GbifClient retries 5xx/429/connection errors and truncated bodies (rewinding the seekable
    temporary file). A gs:// destination is first downloaded to a local temporary file, so a
    retried transfer never leaves a partial upload behind.
    """

    def fill(out: BinaryIO) -> None:
        try:
            written = client.download(url, out, progress=_progress_logger(url, expected_size))
        except GbifApiError as exc:
            raise DwcaError(f"could not download the archive {url}: {exc}") from None
        if expected_size and written != expected_size:
            raise DwcaError(f"could not download the archive {url}: got {written} bytes, GBIF's metadata says {expected_size}")

    if destination.startswith("gs://"):
        with tempfile.TemporaryFile(prefix="beam-gbif-dwca-") as local:
            fill(local)
            local.seek(0)
            write_whole(destination, lambda out: shutil.copyfileobj(local, out, _COPY_CHUNK))
    else:
        write_whole(destination, fill)
    log.info("downloaded %s to %s", url, destination)


# --------------------------------------------------------------------------- resolving and the cache


@dataclasses.dataclass(frozen=True)
class ResolvedArchive:
    """A zip on local disk or GCS, and what identifies it."""

    zip_uri: str
    archive_id: str  # folder name of its extracted files in the cache
    doi: str = ""
    key: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False, compare=False)
    downloaded: bool = False  # fetched during this resolution (False: reused cache or a user path)

    @property
    def source(self) -> str:
        """The records' ``source`` value: ``dwca:<doi or key or file name>``."""
        return f"dwca:{self.doi or self.key or self.zip_uri.rstrip('/').rsplit('/', 1)[-1]}"


def _zip_is_readable(uri: str) -> bool:
    """True when the central directory reads and meta.xml is listed (a truncated zip fails this)."""
    try:
        with FileSystems.open(uri, compression_type=UNCOMPRESSED) as handle, zipfile.ZipFile(handle) as archive:
            return "meta.xml" in archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def _cached_archive_is_valid(uri: str, expected_size: int | None) -> bool:
    size = size_of(uri)
    if size is None:
        return False
    if expected_size and size != expected_size:
        log.warning("cached archive %s has %d bytes, GBIF says %d: fetching it again", uri, size, expected_size)
        return False
    if not _zip_is_readable(uri):
        log.warning("cached archive %s is not a readable zip: fetching it again", uri)
        return False
    return True


def resolve_archive(
    spec: str,
    *,
    cache_root: str | None = None,
    api_url: str = DEFAULT_GBIF_API_URL,
    user_agent: str = DEFAULT_USER_AGENT,
    client: GbifClient | None = None,
    force_download: bool = False,
) -> ResolvedArchive:
    """``--dwca`` → a zip in the cache (downloaded or reused) or the user's own zip.

    ``client`` defaults to a GbifClient of ``api_url`` with ``user_agent``.
    """
    kind, value = classify_spec(spec)
    root = cache_root or default_cache_root()
    if kind == "path":
        if size_of(value) is None:
            raise DwcaError(
                f"--dwca {spec!r}: no such file, and not a GBIF download DOI (10.15468/dl.xxxxxx) or key (0000000-000000000000000)"
            )
        digest = hashlib.sha1(value.encode("utf-8")).hexdigest()[:16]
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", value.rstrip("/").rsplit("/", 1)[-1].removesuffix(".zip"))[:60] or "archive"
        return ResolvedArchive(zip_uri=value, archive_id=f"{stem}-{digest}")
    client = client or GbifClient(api_url, user_agent)
    metadata = fetch_download_metadata(client, value)
    _check_downloadable(metadata, value)
    key = str(metadata["key"])
    safe_member_name(key)  # a key from the API still names a file: it must stay inside the cache
    if "/" in key:
        raise DwcaError(f"GBIF download key {key!r} contains a slash")
    expected_size = int(metadata.get("size") or 0) or None
    zip_uri = join_uri(root, f"{key}.zip")
    downloaded = False
    if force_download or not _cached_archive_is_valid(zip_uri, expected_size):
        url = client.url(f"occurrence/download/request/{key}.zip")
        download_archive(client, url, zip_uri, expected_size)
        if not _zip_is_readable(zip_uri):
            delete_quietly(zip_uri)
            raise DwcaError(f"the archive downloaded from {url} is not a zip with a meta.xml")
        downloaded = True
    else:
        log.info("reusing cached archive %s (%s bytes, matches GBIF's metadata)", zip_uri, expected_size or "size unknown")
    doi = str(metadata.get("doi") or "")
    return ResolvedArchive(zip_uri=zip_uri, archive_id=key, doi=doi, key=key, metadata=metadata, downloaded=downloaded)


# --------------------------------------------------------------------------- extraction
