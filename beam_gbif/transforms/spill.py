"""Shuffles through local files for local runners: GroupByKeyOnDisk and HoldOnDisk.

The FnApiRunner (the DirectRunner's engine) holds every element of a GroupByKey in memory, so
joining a multi-GB Darwin Core Archive by gbifID, or de-duplicating its URLs, would need memory
in proportion to the archive. Here each bundle appends its ``(key, value)`` pairs to one file
per hash bucket; only ``(bucket, file path)`` pairs go through the runner's GroupByKey; and each
bucket is grouped by a DoFn that re-partitions it on disk (a grace hash) until a part fits in
``max_bucket_bytes``. Peak memory is then bounded by that, whatever the input size; the values
of a key too large for it are streamed from disk to the consumer.

HoldOnDisk keeps a PCollection in files while a side input derived from it is computed (count
per stream, then select), which the local runner would otherwise hold in memory meanwhile.

On a remote runner (Dataflow) the shuffle is already external and worker disks are not shared:
``scratch_dir=None`` makes them a plain GroupByKey and the identity.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import struct
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam import coders
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from beam_gbif import METRICS_NAMESPACE, cache_home

_LOG = logging.getLogger(__name__)

SPILL_REPARTITIONS = "spill_repartitions"
SPILL_STREAMED_PARTS = "spill_streamed_parts"

_HEADER = struct.Struct("<II")  # key length, value length
_WRITE_BUFFER_BYTES = 256 * 1024
_READ_BUFFER_BYTES = 1024 * 1024
# One key's values cannot be split across parts: a part still too large at this depth, or one
# that kept more than _UNSPLIT of its parent's bytes, has its values streamed from disk instead.
_MAX_DEPTH = 6
_UNSPLIT = 0.75
# Files open at once while re-partitioning (well under the usual limit of 1,024 descriptors);
# a part still too large after that is split again one level down.
_MAX_PARTS = 256


_IN_MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


def default_scratch_root() -> str:
    """Where local runs spill: the system temp folder (TMPDIR), shared by every worker process of this machine.

    Where that folder is in memory (a tmpfs /tmp, as on Fedora or Arch), spilling to it would
    only move the memory: the beam-gbif cache folder on disk is used instead.
    """
    temp = tempfile.gettempdir()
    if filesystem_type(temp) in _IN_MEMORY_FILESYSTEMS:
        return os.path.join(cache_home(), "spill")
    return os.path.join(temp, "beam-gbif-spill")


def filesystem_type(path: str, mounts: str | None = None) -> str:
    """The type of the file system holding ``path`` ("ext4", "tmpfs", ...), from /proc/mounts; "" when unknown."""
    if mounts is None:
        try:
            with open("/proc/mounts", encoding="utf-8") as table:
                mounts = table.read()
        except OSError:
            return ""
    real = os.path.realpath(path)
    best, kind = "", ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = fields[1].replace("\\040", " ")
        inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, kind = mount_point, fields[2]
    return kind


def warn_if_short_of_space(scratch_dir: str, expected_bytes: int, what: str) -> bool:
    """Logs a warning (and returns True) when the spill folder's disk has less free space than expected_bytes."""
    existing = scratch_dir
    while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    free = shutil.disk_usage(existing).free
    if free >= expected_bytes:
        return False
    _LOG.warning("%s shuffles through %s, which has %.1f GB free; it may need about %.1f GB "
                 "(point TMPDIR, or BEAM_GBIF_CACHE if TMPDIR is in memory, at a larger disk)",
                 what, scratch_dir, free / 1e9, expected_bytes / 1e9)
    return True


def remove_spill_folders(pipeline: beam.Pipeline) -> list[str]:
    """Removes what the pipeline's on-disk shuffles left (a failed or interrupted run); returns the folders removed."""
    folders: list[str] = []

    class _Folders(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node: Any) -> None:
            transform = node.transform
            if isinstance(transform, (GroupByKeyOnDisk, HoldOnDisk)) and transform.spill_folder and os.path.isdir(transform.spill_folder):
                folders.append(transform.spill_folder)

    pipeline.visit(_Folders())
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    return folders


def _bucket_of(key: bytes, depth: int, buckets: int) -> int:
    # Salted per depth so that a re-partitioned bucket spreads over new parts (Python's hash()
    # differs between worker processes, and crc32 with a new seed keeps the same low bits).
    digest = hashlib.blake2b(key, digest_size=8, salt=depth.to_bytes(2, "little")).digest()
    return int.from_bytes(digest, "little") % buckets


def _entries(path: str) -> Iterator[tuple[bytes, bytes]]:
    with open(path, "rb", buffering=_READ_BUFFER_BYTES) as spilled:
        while header := spilled.read(_HEADER.size):
            if len(header) != _HEADER.size:
                raise OSError(f"spill file {path} is truncated")
            key_length, value_length = _HEADER.unpack(header)
            key, value = spilled.read(key_length), spilled.read(value_length)
            if len(key) != key_length or len(value) != value_length:
                raise OSError(f"spill file {path} is truncated")
            yield key, value


class _BucketFiles:
    """Appends entries to one file per bucket under a folder, created on first use."""

    def __init__(self, folder: str, buckets: int, depth: int):
        self.folder = folder
        self._buckets = buckets
        self._depth = depth
        self._prefix = uuid.uuid4().hex
        self._files: dict[int, Any] = {}

    def add(self, key: bytes, value: bytes) -> None:
        bucket = _bucket_of(key, self._depth, self._buckets)
        spilled = self._files.get(bucket)
        if spilled is None:
            os.makedirs(self.folder, exist_ok=True)
            spilled = open(os.path.join(self.folder, f"{self._prefix}-{bucket:05d}"), "wb", buffering=_WRITE_BUFFER_BYTES)  # noqa: SIM115
            self._files[bucket] = spilled
        spilled.write(_HEADER.pack(len(key), len(value)))
        spilled.write(key)
        spilled.write(value)

    def close(self) -> dict[int, str]:
        paths = {}
        for bucket, spilled in self._files.items():
            spilled.close()
            paths[bucket] = spilled.name
        self._files = {}
        return paths


class _SpillBuckets(beam.DoFn):
    """``(key, value)`` → appended to this bundle's bucket files; at the bundle's end, ``(bucket, path)`` per file."""

    def __init__(self, folder: str, buckets: int, key_coder: coders.Coder, value_coder: coders.Coder):
        self._folder = folder
        self._buckets = buckets
        self._key_coder = key_coder
        self._value_coder = value_coder

    def start_bundle(self) -> None:
        self._files = _BucketFiles(self._folder, self._buckets, depth=0)

    def process(self, element: tuple[Any, Any]) -> None:
        key, value = element
        self._files.add(self._key_coder.encode(key), self._value_coder.encode(value))

    def finish_bundle(self) -> Iterable[Any]:
        for bucket, path in self._files.close().items():
            yield GlobalWindows.windowed_value((bucket, path))


class _GroupBuckets(beam.DoFn):
    """``(bucket, paths)`` → ``(key, values)`` for every key in them, holding at most about max_bucket_bytes at once."""

    def __init__(self, max_bucket_bytes: int, key_coder: coders.Coder, value_coder: coders.Coder):
        self._max_bytes = max_bucket_bytes
        self._key_coder = key_coder
        self._value_coder = value_coder
        self._repartitions = Metrics.counter(METRICS_NAMESPACE, SPILL_REPARTITIONS)
        self._streamed = Metrics.counter(METRICS_NAMESPACE, SPILL_STREAMED_PARTS)

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[tuple[Any, Iterable[Any]]]:
        _, paths = element
        paths = sorted(paths)
        _require(paths)
        yield from self._group(paths, depth=0)
        _consumed(paths)

    def _group(self, paths: list[str], depth: int, parent_size: float = math.inf) -> Iterator[tuple[Any, Iterable[Any]]]:
        size = sum(os.path.getsize(path) for path in paths)
        if size <= self._max_bytes:
            yield from self._group_in_memory(paths)
            return
        if depth >= _MAX_DEPTH or size > _UNSPLIT * parent_size:
            # Re-partitioning no longer splits it: a few keys hold most of it, so their values stay on disk.
            yield from self._group_streamed(paths)
            return
        parts = min(_MAX_PARTS, max(2, 2 * math.ceil(size / self._max_bytes)))
        self._repartitions.inc()
        files = _BucketFiles(os.path.join(os.path.dirname(paths[0]), f"part-{uuid.uuid4().hex}"), parts, depth + 1)
        try:
            for path in paths:
                for key, value in _entries(path):
                    files.add(key, value)
            for part in sorted(files.close().values()):
                yield from self._group([part], depth + 1, size)
        finally:
            files.close()
            shutil.rmtree(files.folder, ignore_errors=True)

    def _group_in_memory(self, paths: list[str]) -> Iterator[tuple[Any, list[Any]]]:
        # Encoded values stay bytes until their key is emitted: decoded objects are several times larger.
        groups: dict[bytes, list[bytes]] = defaultdict(list)
        for path in paths:
            for key, value in _entries(path):
                groups[key].append(value)
        while groups:
            key, values = groups.popitem()
            yield self._key_coder.decode(key), [self._value_coder.decode(value) for value in values]

    def _group_streamed(self, paths: list[str]) -> Iterator[tuple[Any, Iterable[Any]]]:
        self._streamed.inc()
        keys = dict.fromkeys(key for path in paths for key, _ in _entries(path))
        for key in keys:
            yield self._key_coder.decode(key), _ValuesOnDisk(tuple(paths), key, self._value_coder)


class _ValuesOnDisk:
    """One key's values, read from the spill files on each iteration (a GroupByKey's values may be iterated again).

    Valid while the consumer's ``process`` call runs: the files are removed once the bucket is done.
    """

    def __init__(self, paths: tuple[str, ...], key: bytes, coder: coders.Coder):
        self._paths = paths
        self._key = key
        self._coder = coder

    def __iter__(self) -> Iterator[Any]:
        for path in self._paths:
            for key, value in _entries(path):
                if key == self._key:
                    yield self._coder.decode(value)


def _require(paths: list[str]) -> None:
    missing = [path for path in paths if not os.path.exists(path)]
    if missing:
        # Only a retried bundle can get here: its first attempt consumed the files.
        raise FileNotFoundError(f"spill file(s) {', '.join(missing)} are gone; the local shuffle cannot be replayed")


def _consumed(paths: list[str]) -> None:
    """Removes spill files once read, and their folder once it is empty."""
    for path in paths:
        os.remove(path)
    try:
        os.rmdir(os.path.dirname(paths[0]))
    except OSError:
        pass  # other buckets' files are still there, or another worker removed it first


class GroupByKeyOnDisk(beam.PTransform):
    """``(key, value)`` → ``(key, [values])``, like GroupByKey, with the shuffle in files under ``scratch_dir``.

    Applied to a tuple of PCollections, it groups them together (a Flatten, then a GroupByKey).

    ``scratch_dir=None`` is a plain GroupByKey (remote runners). Each application spills under its
    own folder, which is removed once every bucket is grouped. Keys and values are encoded with
    the given coders; keys must encode deterministically (equal keys, equal bytes).
    """

    def __init__(self, scratch_dir: str | None, *, key_coder: coders.Coder | None = None, value_coder: coders.Coder | None = None,
                 buckets: int = 64, max_bucket_bytes: int = 32 * 1024 * 1024):
        super().__init__()
        if buckets < 1 or max_bucket_bytes < 1:
            raise ValueError(f"buckets and max_bucket_bytes must be positive, not {buckets} and {max_bucket_bytes}")
        self.spill_folder = None if scratch_dir is None else os.path.join(scratch_dir, uuid.uuid4().hex)
        self._key_coder = key_coder or coders.StrUtf8Coder()
        self._value_coder = value_coder or coders.PickleCoder()
        self._buckets = buckets
        self._max_bucket_bytes = max_bucket_bytes

    def expand(self, pairs: beam.PCollection | tuple[beam.PCollection, ...]) -> beam.PCollection:
        # Several inputs are grouped together, as if flattened first. Each is spilled on its own:
        # the FnApiRunner materialises a Flatten whose inputs come from different stages.
        inputs = tuple(pairs) if isinstance(pairs, (tuple, list)) else (pairs,)
        if self.spill_folder is None:
            return inputs | "Flatten" >> beam.Flatten() | "GroupByKey" >> beam.GroupByKey()
        spill = _SpillBuckets(self.spill_folder, self._buckets, self._key_coder, self._value_coder)
        group = _GroupBuckets(self._max_bucket_bytes, self._key_coder, self._value_coder)
        files = [pcoll | f"SpillToBuckets{index or ''}" >> beam.ParDo(spill) for index, pcoll in enumerate(inputs)]
        # Typed as (key, iterable): should a runner ever encode the groups, an IterableCoder reads
        # streamed values while their files still exist, instead of pickling a reference to them.
        grouped = beam.ParDo(group).with_output_types(tuple[Any, Iterable[Any]])
        return files | "Flatten" >> beam.Flatten() | "FilesPerBucket" >> beam.GroupByKey() | "GroupEachBucket" >> grouped


class _SpillValues(_SpillBuckets):
    """Elements → one file per bundle (a single bucket, no key); at the bundle's end, ``(0, path)``."""

    def __init__(self, folder: str, coder: coders.Coder):
        super().__init__(folder, 1, coders.BytesCoder(), coder)

    def process(self, element: Any) -> None:
        super().process((b"", element))


class _ReadBack(beam.DoFn):
    """``(0, spilled file)`` → its elements; the file is removed once they are all out."""

    def __init__(self, coder: coders.Coder):
        self._coder = coder

    def process(self, element: tuple[int, str], until: Any = None) -> Iterator[Any]:
        _, path = element
        _require([path])
        for _, value in _entries(path):
            yield self._coder.decode(value)
        _consumed([path])


class HoldOnDisk(beam.PTransform):
    """The same elements, held in files under ``scratch_dir`` until ``until`` (a PCollection) is computed.

    A local runner that must finish a side input derived from a PCollection (count, then select)
    before a consumer can read it would otherwise hold the whole PCollection in memory meanwhile.
    ``until`` is the read-back's side input, so the read-back cannot be fused before it is ready.
    ``scratch_dir=None`` (remote runners): the identity.
    """

    def __init__(self, scratch_dir: str | None, coder: coders.Coder, *, until: beam.PCollection):
        super().__init__()
        self.spill_folder = None if scratch_dir is None else os.path.join(scratch_dir, uuid.uuid4().hex)
        self._coder = coder
        self._until = until

    def expand(self, elements: beam.PCollection) -> beam.PCollection:
        if self.spill_folder is None:
            return elements
        return (elements
                | "SpillToFiles" >> beam.ParDo(_SpillValues(self.spill_folder, self._coder))
                | "ReadBack" >> beam.ParDo(_ReadBack(self._coder), until=beam.pvalue.AsIter(self._until))
                .with_output_types(elements.element_type))
