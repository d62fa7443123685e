"""Deterministic tar streams: every member with the same mtime, owner, group and mode, so the same
samples give byte-identical shards on any machine and rerun (webdataset's shards)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from typing import BinaryIO

# A fixed date (2000-01-01T00:00:00Z) rather than 0: some tools warn about members dated 1970.
FIXED_MTIME = 946684800
FIXED_MODE = 0o644


def fixed_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = FIXED_MTIME
    info.mode = FIXED_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def write_tar(out: BinaryIO, members: Iterable[tuple[str, bytes]]) -> None:
    """Writes ``(name, bytes)`` members, in the given order, as a POSIX (ustar) tar to ``out``."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            tar.addfile(fixed_info(name, len(data)), io.BytesIO(data))
