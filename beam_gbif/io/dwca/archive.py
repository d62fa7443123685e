"""From ``--dwca DOI|KEY|PATH`` to extracted, splittable text files in the cache folder.

A GBIF download is resolved through ``GET {api}/occurrence/download/{doi-or-key}`` and fetched
from ``{api}/occurrence/download/request/{key}.zip`` into ``--dwca_root_path`` (local folder or
gs://). The cached zip is reused only when its size matches GBIF's metadata and its central
directory reads; otherwise it is fetched again. Zip members are not splittable, so the core and
multimedia files are extracted once into ``{root}/{archive_id}/`` and then read in parallel.
Nothing is ever written outside the cache folder: member names that could leave it are refused,
and so are archives with a symlink, too many members, a bomb-like compression ratio, or more to
extract than the cache folder's disk has free (zip_checks.py), all before anything is extracted.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from typing import Any, BinaryIO
from zlib import error as ZlibError  # what a corrupt deflate stream raises

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_gbif import DEFAULT_USER_AGENT, cache_home
from beam_gbif.io.dwca.meta import ArchiveMeta, DwcaError, DwcaFile, parse_meta, safe_member_name
from beam_gbif.io.dwca.zip_checks import check_free_space, check_members
from beam_gbif.io.gbif.client import DEFAULT_GBIF_API_URL, GbifApiError, GbifClient
from beam_gbif.io.store import join_uri, write_whole

log = logging.getLogger(__name__)

_DOI = re.compile(r"^(?:doi:|https?://(?:dx\.)?doi\.org/)?(10\.\d{4,9}/\S+)$", re.IGNORECASE)
DOWNLOAD_KEY = re.compile(r"^\d{7}-\d{15}$")  # what GBIF calls a download key: 0117522-200613084148143
_EXTRACTED_MARKER = "_EXTRACTED.json"
_COPY_CHUNK = 1 << 20
# Small files extracted next to the data for attribution (citations.txt lists every dataset).
_ATTRIBUTION_MEMBERS = ("citations.txt", "rights.txt", "metadata.xml")

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


def _size(uri: str) -> int | None:
    """Size in bytes, None if absent."""
    try:
        if not FileSystems.exists(uri):
            return None
        return FileSystems.get_filesystem(uri).size(uri)
    except OSError:
        return None


def _delete(uri: str) -> None:
    try:
        FileSystems.delete([uri])
    except Exception:  # noqa: BLE001 - best effort: an absent file is already what we want
        log.debug("could not delete %s", uri, exc_info=True)


def _read_bytes(uri: str) -> bytes:
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
    size = _size(uri)
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
        if _size(value) is None:
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
            _delete(zip_uri)
            raise DwcaError(f"the archive downloaded from {url} is not a zip with a meta.xml")
        downloaded = True
    else:
        log.info("reusing cached archive %s (%s bytes, matches GBIF's metadata)", zip_uri, expected_size or "size unknown")
    doi = str(metadata.get("doi") or "")
    return ResolvedArchive(zip_uri=zip_uri, archive_id=key, doi=doi, key=key, metadata=metadata, downloaded=downloaded)


# --------------------------------------------------------------------------- extraction


@dataclasses.dataclass(frozen=True)
class PreparedArchive:
    """An archive ready for the pipeline: its meta.xml and the extracted core and multimedia files."""

    archive: ResolvedArchive
    meta: ArchiveMeta
    core_uri: str
    multimedia_uri: str
    folder: str
    attribution: dict[str, str] = dataclasses.field(default_factory=dict, hash=False, compare=False)  # member name → uri
    published: str = ""  # metadata.xml's pubDate, for the citation when GBIF's metadata gives no creation date

    @property
    def core(self) -> DwcaFile:
        return self.meta.core

    @property
    def multimedia(self) -> DwcaFile:
        return self.meta.multimedia()


def _open_zip(uri: str) -> tuple[BinaryIO, zipfile.ZipFile]:
    handle = FileSystems.open(uri, compression_type=UNCOMPRESSED)
    try:
        return handle, zipfile.ZipFile(handle)
    except zipfile.BadZipFile:
        handle.close()
        raise DwcaError(f"{uri} is not a zip file (a Darwin Core Archive is a zip with meta.xml)") from None


def _member_fingerprint(info: zipfile.ZipInfo) -> list[int]:
    return [info.file_size, info.CRC]


def _copy_member(archive: zipfile.ZipFile, member: str, destination: str) -> None:
    def fill(out: BinaryIO) -> None:
        with archive.open(member) as source:  # zipfile checks the CRC at the end of the member
            shutil.copyfileobj(source, out, _COPY_CHUNK)

    write_whole(destination, fill)


def _destination(folder: str, member: str) -> str:
    relative = safe_member_name(member)
    destination = join_uri(folder, *relative.split("/"))
    if not folder.startswith("gs://"):
        real_folder = os.path.realpath(folder)
        if os.path.commonpath([real_folder, os.path.realpath(destination)]) != real_folder:
            raise DwcaError(f"refusing to write {member!r} outside the cache folder {folder}")
    return destination


def _extract(zip_uri: str, folder: str) -> tuple[ArchiveMeta, dict[str, str], dict[str, str]]:
    """Extracts the core, multimedia and attribution files unless the marker says they are current."""
    handle, archive = _open_zip(zip_uri)
    with handle, archive:
        check_members(archive, zip_uri)
        members = {info.filename: info for info in archive.infolist()}
        if "meta.xml" not in members:
            raise DwcaError(f"{zip_uri} has no meta.xml: it is a zip, but not a Darwin Core Archive")
        meta = parse_meta(archive.read("meta.xml"), zip_uri)
        multimedia = meta.multimedia(zip_uri)
        wanted = [meta.core.location, multimedia.location]
        for location in wanted:
            if location not in members:
                raise DwcaError(f"{zip_uri}: meta.xml names {location!r}, which the zip does not contain")
        attribution = [m for m in _ATTRIBUTION_MEMBERS if m in members]
        fingerprint = {m: _member_fingerprint(members[m]) for m in [*wanted, *attribution]}
        targets = {m: _destination(folder, m) for m in fingerprint}
        marker_uri = join_uri(folder, _EXTRACTED_MARKER)
        current = _size(marker_uri) is not None and json.loads(_read_bytes(marker_uri)).get("members") == fingerprint
        if current and all(_size(uri) == fingerprint[m][0] for m, uri in targets.items()):
            log.info("reusing extracted files of %s in %s", zip_uri, folder)
        else:
            check_free_space(folder, sum(members[m].file_size for m in targets), zip_uri)
            _delete(marker_uri)
            for member, target in targets.items():
                log.info("extracting %s from %s to %s (%.1f MB)", member, zip_uri, target, members[member].file_size / 1e6)
                _copy_member(archive, member, target)
            write_whole(marker_uri, json.dumps({"zip": zip_uri, "members": fingerprint}).encode("utf-8"))
        files = {"core": targets[meta.core.location], "multimedia": targets[multimedia.location]}
        return meta, files, {m: targets[m] for m in attribution}


_prepared: dict[tuple[str, str, str], PreparedArchive] = {}
_prepared_lock = threading.Lock()


def prepare_archive(
    spec: str,
    *,
    cache_root: str | None = None,
    api_url: str = DEFAULT_GBIF_API_URL,
    user_agent: str = DEFAULT_USER_AGENT,
    client: GbifClient | None = None,
) -> PreparedArchive:
    """Resolves, downloads if needed and extracts ``spec``; memoised per process (one download per run).

    A cached download whose members fail their CRC is deleted and fetched once more.
    """
    root = cache_root or default_cache_root()
    client = client or GbifClient(api_url, user_agent)
    memo_key = (spec, root, client.api_url)
    with _prepared_lock:
        if memo_key in _prepared:
            return _prepared[memo_key]
        resolved = resolve_archive(spec, cache_root=root, client=client)
        folder = join_uri(root, resolved.archive_id)
        try:
            meta, files, attribution = _extract(resolved.zip_uri, folder)
        except (zipfile.BadZipFile, EOFError, ZlibError) as exc:
            if not resolved.key:
                raise DwcaError(f"{resolved.zip_uri} is a damaged zip: {exc}") from None
            log.warning("cached archive %s is damaged (%s): fetching it again", resolved.zip_uri, exc)
            resolved = resolve_archive(spec, cache_root=root, client=client, force_download=True)
            meta, files, attribution = _extract(resolved.zip_uri, folder)
        facts = _metadata_xml_facts(_read_bytes(attribution["metadata.xml"])) if "metadata.xml" in attribution else {}
        # A user's own zip of a GBIF download still names its DOI and key in metadata.xml.
        resolved = dataclasses.replace(resolved, doi=resolved.doi or facts.get("doi", ""), key=resolved.key or facts.get("key", ""))
        prepared = PreparedArchive(resolved, meta, files["core"], files["multimedia"], folder, attribution, facts.get("date", ""))
        _prepared[memo_key] = prepared
        return prepared


def forget_prepared_archives() -> None:
    """Clears the per-process memo (tests that damage a cache on purpose need a fresh resolution)."""
    with _prepared_lock:
        _prepared.clear()


# --------------------------------------------------------------------------- citation


def _metadata_xml_facts(xml: bytes) -> dict[str, str]:
    """DOI (packageId), key (alternateIdentifier) and publication date from the archive's metadata.xml."""
    text = xml.decode("utf-8", errors="replace")
    facts = {}
    for name, pattern in (
        ("doi", r'packageId="([^"]+)"'),
        ("key", r"<alternateIdentifier>\s*([^<]+?)\s*</alternateIdentifier>"),
        ("date", r"<pubDate>\s*([^<]+?)\s*</pubDate>"),
    ):
        match = re.search(pattern, text)
        if match:
            facts[name] = match.group(1)
    return facts


def _citation_date(raw: str) -> str:
    try:
        day = datetime.date.fromisoformat(raw[:10])
    except ValueError:
        return raw
    return f"{day.day} {day.strftime('%B')} {day.year}"


def citation_of(prepared: PreparedArchive) -> dict[str, Any]:
    """What stats.json and the manifest need to cite the download, as GBIF asks.

    ``citation`` follows GBIF's form: ``GBIF.org (14 October 2021) GBIF Occurrence Download
    https://doi.org/10.15468/dl.jd3hup``; ``citations_uri`` is the archive's citations.txt
    (one line per constituent dataset).
    """
    metadata = prepared.archive.metadata
    doi, key = prepared.archive.doi, prepared.archive.key  # a user's own zip: from its metadata.xml (prepare_archive)
    date = _citation_date(str(metadata.get("created") or prepared.published))
    citation = ""
    if doi:
        citation = f"GBIF.org ({date}) GBIF Occurrence Download https://doi.org/{doi}" if date else f"GBIF Occurrence Download https://doi.org/{doi}"
    datasets = None
    if "citations.txt" in prepared.attribution:
        lines = _read_bytes(prepared.attribution["citations.txt"]).decode("utf-8", errors="replace").splitlines()
        datasets = sum(1 for line in lines[1:] if line.strip())
    return {
        "source": prepared.archive.source,
        "doi": doi,
        "key": key,
        "citation": citation,
        "license": str(metadata.get("license") or ""),
        "total_records": metadata.get("totalRecords"),
        "datasets": datasets if datasets is not None else metadata.get("numberDatasets"),
        "archive_uri": prepared.archive.zip_uri,
        "citations_uri": prepared.attribution.get("citations.txt", ""),
        "rights_uri": prepared.attribution.get("rights.txt", ""),
    }


__all__ = [
    "DwcaError",
    "PreparedArchive",
    "ResolvedArchive",
    "citation_of",
    "classify_spec",
    "default_cache_root",
    "download_archive",
    "fetch_download_metadata",
    "forget_prepared_archives",
    "prepare_archive",
    "resolve_archive",
]
