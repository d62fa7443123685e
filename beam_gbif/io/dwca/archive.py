"""From ``--dwca DOI|KEY|PATH`` to extracted, splittable text files in the cache folder.

The archive is first resolved and fetched into ``--dwca_root_path`` (resolve.py). Zip members are not splittable, so the core and
multimedia files are extracted once into ``{root}/{archive_id}/`` and then read in parallel.
Nothing is ever written outside the cache folder: member names that could leave it are refused,
and so are archives with a symlink, too many members, a bomb-like compression ratio, or more to
extract than the cache folder's disk has free (zip_checks.py), all before anything is extracted.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import re
import shutil
import threading
import zipfile
from typing import Any, BinaryIO
from zlib import error as ZlibError  # what a corrupt deflate stream raises

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_gbif import DEFAULT_USER_AGENT
from beam_gbif.io.dwca.meta import ArchiveMeta, DwcaError, DwcaFile, parse_meta, safe_member_name
from beam_gbif.io.dwca.resolve import ResolvedArchive, default_cache_root, delete_quietly, read_bytes, resolve_archive, size_of
from beam_gbif.io.dwca.zip_checks import check_free_space, check_members
from beam_gbif.io.gbif.client import DEFAULT_GBIF_API_URL, GbifClient
from beam_gbif.io.store import join_uri, write_whole

log = logging.getLogger(__name__)

_EXTRACTED_MARKER = "_EXTRACTED.json"
_COPY_CHUNK = 1 << 20
# Small files extracted next to the data for attribution (citations.txt lists every dataset).
_ATTRIBUTION_MEMBERS = ("citations.txt", "rights.txt", "metadata.xml")

UNCOMPRESSED = CompressionTypes.UNCOMPRESSED


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
        current = size_of(marker_uri) is not None and json.loads(read_bytes(marker_uri)).get("members") == fingerprint
        if current and all(size_of(uri) == fingerprint[m][0] for m, uri in targets.items()):
            log.info("reusing extracted files of %s in %s", zip_uri, folder)
        else:
            check_free_space(folder, sum(members[m].file_size for m in targets), zip_uri)
            delete_quietly(marker_uri)
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
        facts = _metadata_xml_facts(read_bytes(attribution["metadata.xml"])) if "metadata.xml" in attribution else {}
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
        lines = read_bytes(prepared.attribution["citations.txt"]).decode("utf-8", errors="replace").splitlines()
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


__all__ = ["DwcaError", "PreparedArchive", "ResolvedArchive", "citation_of", "default_cache_root", "forget_prepared_archives",
           "prepare_archive", "resolve_archive"]
