"""One small storage API over a dataset root (a local folder or ``gs://bucket/prefix``), and the one
atomic-write rule of the project.

The rule, for every file the project writes (media, stats.json, the archive cache): a file
appears whole or not at all. Locally, bytes go to a hidden temp file in the same folder
(``.<name>.<id>.tmp``, see local_files.py), then renamed over the final name; a killed process
(even by SIGKILL) leaves at most a temp file, which the next run removes. Surviving a power loss
is the file system's business unless a store is made with ``fsync=True``. On GCS an object is one
upload (the media Store, create-only), or a temp object renamed into place when it is streamed (``write_whole`` with a
``fill`` function), because closing a streamed writer after a failure would still publish it.
The manifest shards and ATTRIBUTION.csv are Beam file sinks, which publish by rename the same way.
Stores are pickle-safe (the GCS client is created lazily, per process), so a DoFn can hold one.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from beam_gbif.io.local_files import is_temp_name, write_local


def write_whole(uri: str, data: bytes | Callable[[BinaryIO], Any], *, content_type: str = "") -> None:
    """Writes ``data`` (bytes, or a function that fills a binary file) to a local path or gs:// URI, whole or not at all."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if not is_gcs(uri):
        os.makedirs(os.path.dirname(uri) or ".", exist_ok=True)
        write_local(uri, data)
        return
    fill = data if callable(data) else (lambda out: out.write(data))
    temporary = f"{uri}.partial-{uuid.uuid4().hex[:12]}"
    try:
        with FileSystems.create(temporary, mime_type=content_type or "application/octet-stream",
                                compression_type=CompressionTypes.UNCOMPRESSED) as out:
            fill(out)
        FileSystems.rename([temporary], [uri])
    except BaseException:
        try:
            FileSystems.delete([temporary])
        except Exception:  # noqa: BLE001 - the upload may never have started; nothing to clean then
            pass
        raise


def is_gcs(uri: str) -> bool:
    return str(uri).startswith("gs://")


def join_uri(root: str, *parts: str) -> str:
    """``root/part/...`` for a local folder or a gs:// prefix (the one path join of the project)."""
    if is_gcs(root):
        return "/".join([root.rstrip("/"), *parts])
    return os.path.join(root, *parts)


class StoreError(ValueError):
    """A dataset root or a relative path that cannot be used."""


def _clean_rel(rel: str) -> str:
    """A relative path inside the root; refuses anything that could leave it."""
    rel = rel.replace("\\", "/")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if rel.startswith("/") or any(p == ".." for p in parts):
        raise StoreError(f"path {rel!r} must stay inside the dataset root")
    return "/".join(parts)


class Store:
    """Interface; ``rel`` paths use ``/`` and are relative to the root."""

    root: str

    def write_atomic(self, rel: str, data: bytes, content_type: str = "", metadata: dict[str, str] | None = None,
                     overwrite: bool = False) -> bool:
        """Writes ``data`` whole at ``rel``. False when the file was already there and was kept
        instead (a GCS create-only write): ``describe`` then tells what the file really holds.
        ``overwrite``: replace an existing object too (still one upload on GCS; local writes always replace)."""
        raise NotImplementedError

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def describe(self, rel: str) -> tuple[int, str]:
        """(size in bytes, sha256 hex) of an existing file."""
        raise NotImplementedError

    def read(self, rel: str) -> bytes:
        raise NotImplementedError

    def list(self, prefix: str = "") -> list[str]:
        """Relative paths of every file under ``prefix`` (a folder), sorted; temp files excluded."""
        raise NotImplementedError

    def list_dir(self, folder: str, startswith: str = "") -> list[str]:
        """Names directly in ``folder`` starting with ``startswith`` (files only, temp files included); [] if none."""
        raise NotImplementedError

    def delete(self, rel: str) -> None:
        """Removes a file; no error if it is already gone."""
        raise NotImplementedError

    def list_folders(self, folder: str, startswith: str = "") -> list[str]:
        """Names of the folders directly in ``folder`` starting with ``startswith``, sorted; [] if none."""
        raise NotImplementedError

    def delete_folder(self, rel: str) -> None:
        """Removes a folder and everything under it; no error if it is already gone."""
        raise NotImplementedError

    def temp_files(self, prefix: str = "") -> list[str]:
        """Relative paths of the hidden temp files that interrupted writes left under ``prefix``, sorted."""
        raise NotImplementedError

    def uri(self, rel: str = "") -> str:
        raise NotImplementedError

    @property
    def is_local(self) -> bool:
        return False


class LocalStore(Store):
    def __init__(self, root: str | os.PathLike, fsync: bool = False) -> None:
        path = Path(root).expanduser()
        if path.exists() and not path.is_dir():
            raise StoreError(f"dataset root {str(path)!r} exists and is not a folder")
        self.root = str(path.resolve())
        self.fsync = fsync
        # Folders this store made or found: a dataset has few folders and many files, and a
        # makedirs per file was a measurable share of a small-file download.
        self._folders: set[str] = set()

    @property
    def is_local(self) -> bool:
        return True

    def _path(self, rel: str) -> str:
        clean = _clean_rel(rel)
        return os.path.join(self.root, *clean.split("/")) if clean else self.root

    def write_atomic(self, rel: str, data: bytes, content_type: str = "", metadata: dict[str, str] | None = None,
                     overwrite: bool = False) -> bool:
        final = self._path(rel)
        folder = os.path.dirname(final)
        if folder not in self._folders:
            self._make_folder(folder)
        try:
            write_local(final, data, fsync=self.fsync)
        except FileNotFoundError:  # the folder was removed since (by hand, or a --prune of another run): make it again
            self._folders.discard(folder)
            self._make_folder(folder)
            write_local(final, data, fsync=self.fsync)
        return True

    def _make_folder(self, folder: str) -> None:
        try:
            os.makedirs(folder, exist_ok=True)
        except FileExistsError:
            raise StoreError(f"{folder!r} exists and is not a folder") from None
        self._folders.add(folder)

    def exists(self, rel: str) -> bool:
        return os.path.isfile(self._path(rel))

    def read(self, rel: str) -> bytes:
        with open(self._path(rel), "rb") as handle:
            return handle.read()

    def list(self, prefix: str = "") -> list[str]:
        return sorted(rel for rel in self._walk(prefix) if not is_temp_name(posixpath.basename(rel)))

    def describe(self, rel: str) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        with open(self._path(rel), "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        return size, digest.hexdigest()

    def list_dir(self, folder: str, startswith: str = "") -> list[str]:
        try:
            with os.scandir(self._path(folder)) as entries:
                return [e.name for e in entries if e.name.startswith(startswith) and e.is_file()]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete(self, rel: str) -> None:
        try:
            os.unlink(self._path(rel))
        except FileNotFoundError:
            pass

    def list_folders(self, folder: str, startswith: str = "") -> list[str]:
        try:
            with os.scandir(self._path(folder)) as entries:
                return sorted(e.name for e in entries if e.name.startswith(startswith) and e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete_folder(self, rel: str) -> None:
        shutil.rmtree(self._path(rel), ignore_errors=True)

    def temp_files(self, prefix: str = "") -> list[str]:
        return sorted(rel for rel in self._walk(prefix) if is_temp_name(posixpath.basename(rel)))

    def _walk(self, prefix: str) -> Iterator[str]:
        """Relative paths of every file under ``prefix``, temp files included."""
        for folder, _dirs, files in os.walk(self._path(prefix)):
            for name in files:
                yield os.path.relpath(os.path.join(folder, name), self.root).replace(os.sep, "/")

    def uri(self, rel: str = "") -> str:
        return self._path(rel)


def gcs_client() -> Any:
    """A google-cloud-storage client; anonymous against an emulator (``STORAGE_EMULATOR_HOST``)."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "beam-gbif-emulator"), credentials=AnonymousCredentials())
    return storage.Client()


class GcsStore(Store):
    """``gs://bucket/prefix``. Writes are single uploads; the client is thread-safe for our use and
    its HTTP pool is widened so many uploads can be in flight from a thread pool."""

    def __init__(self, root: str) -> None:
        if not root.startswith("gs://"):
            raise StoreError(f"not a gs:// URI: {root!r}")
        bucket, _, prefix = root[len("gs://"):].partition("/")
        if not bucket:
            raise StoreError(f"no bucket in {root!r}")
        self.bucket_name = bucket
        self.prefix = _clean_rel(prefix)
        self.root = f"gs://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self._bucket: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"bucket_name": self.bucket_name, "prefix": self.prefix, "root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bucket = None
        self._lock = threading.Lock()

    def bucket(self) -> Any:
        with self._lock:
            if self._bucket is None:
                client = gcs_client()
                _widen_http_pool(client, 128)
                self._bucket = client.bucket(self.bucket_name)
            return self._bucket

    def _key(self, rel: str) -> str:
        clean = _clean_rel(rel)
        return "/".join(p for p in (self.prefix, clean) if p)

    def write_atomic(self, rel: str, data: bytes, content_type: str = "", metadata: dict[str, str] | None = None,
                     overwrite: bool = False) -> bool:
        from google.api_core.exceptions import PreconditionFailed

        blob = self.bucket().blob(self._key(rel))
        if metadata:
            blob.metadata = dict(metadata)
        try:
            # if_generation_match=0: create only; a retried bundle never rewrites a finished object.
            blob.upload_from_string(data, content_type=content_type or "application/octet-stream",
                                    if_generation_match=None if overwrite else 0)
        except PreconditionFailed:
            return False  # another attempt created it first; its bytes may differ from ``data``
        return True

    def exists(self, rel: str) -> bool:
        return bool(self.bucket().blob(self._key(rel)).exists())

    def read(self, rel: str) -> bytes:
        return self.bucket().blob(self._key(rel)).download_as_bytes()

    def describe(self, rel: str) -> tuple[int, str]:
        """Uses the sha256 stored in the object's metadata at upload; hashes the object otherwise."""
        from google.api_core.exceptions import NotFound

        blob = self.bucket().get_blob(self._key(rel))
        if blob is None:
            raise NotFound(f"{self.uri(rel)} does not exist")
        sha = (blob.metadata or {}).get("sha256", "")
        if not sha:
            sha = hashlib.sha256(blob.download_as_bytes()).hexdigest()
        return int(blob.size or 0), sha

    def _list_keys(self, prefix: str, delimiter: str | None, startswith: str = "") -> list[str]:
        key = self._key(prefix)
        key = (key + "/" if key else "") + startswith
        blobs = self.bucket().client.list_blobs(self.bucket_name, prefix=key, delimiter=delimiter)
        base = self.prefix + "/" if self.prefix else ""
        return [b.name[len(base):] for b in blobs if not b.name.endswith("/")]

    def list(self, prefix: str = "") -> list[str]:
        return sorted(self._list_keys(prefix, None))

    def list_dir(self, folder: str, startswith: str = "") -> list[str]:
        return [posixpath.basename(k) for k in self._list_keys(folder, "/", startswith)]

    def list_folders(self, folder: str, startswith: str = "") -> list[str]:
        key = self._key(folder)
        key = (key + "/" if key else "") + startswith
        pages = self.bucket().client.list_blobs(self.bucket_name, prefix=key, delimiter="/")
        for _blob in pages:  # the folders ("prefixes") are known once the listing is read
            pass
        return sorted(posixpath.basename(p.rstrip("/")) for p in pages.prefixes)

    def delete_folder(self, rel: str) -> None:
        for key in self._list_keys(rel, None):
            self.delete(key)

    def temp_files(self, prefix: str = "") -> list[str]:
        return []  # an upload is whole or absent: GCS writes leave no temp objects

    def delete(self, rel: str) -> None:
        from google.api_core.exceptions import NotFound

        try:
            self.bucket().blob(self._key(rel)).delete()
        except NotFound:
            pass

    def uri(self, rel: str = "") -> str:
        clean = _clean_rel(rel)
        return f"{self.root}/{clean}" if clean else self.root


def _widen_http_pool(client: Any, size: int) -> None:
    """The default requests pool keeps 10 connections; uploads from many threads need more."""
    try:
        import requests.adapters

        adapter = requests.adapters.HTTPAdapter(pool_connections=size, pool_maxsize=size)
        client._http.mount("https://", adapter)
        client._http.mount("http://", adapter)
    except Exception:  # noqa: BLE001 - only an optimisation
        pass


def store_for(root: str | os.PathLike, fsync: bool = False) -> Store:
    """The store for a dataset root: ``gs://bucket/prefix`` or a local folder (created on first write)."""
    text = os.fspath(root)
    if not text:
        raise StoreError("empty dataset root")
    if text.startswith("gs://"):
        return GcsStore(text)
    if "://" in text:
        raise StoreError(f"unsupported dataset root {text!r}: use a local folder or gs://bucket/prefix")
    return LocalStore(text, fsync=fsync)
