"""What a zip must pass before anything is extracted from it: safe names, no links, no bombs.

Everything here reads the central directory only. Its sizes can be trusted as bounds: zipfile
never returns more than a member's declared size, and a member that inflates to anything else
fails its CRC check.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile

from beam_gbif.io.dwca.meta import DwcaError, safe_member_name

# Members other than the per-dataset metadata: a GBIF download has a few data files.
MAX_MEMBERS = 1_000
# A GBIF download also holds one dataset/<uuid>.xml per constituent dataset, and downloads that span
# thousands of datasets are common. Those members are never extracted, so they are held only to a
# bound that keeps reading the central directory cheap.
MAX_DATASET_METADATA_MEMBERS = 200_000
# Real archives' text compresses about 8-16:1; deflate tops out near 1032:1 on runs of one byte.
MAX_COMPRESSION_RATIO = 200
# A member smaller than this cannot fill a disk whatever its ratio (an all-empty column file may
# legitimately compress that well), so its ratio is not held against the archive.
RATIO_CHECKED_FROM_BYTES = 1 << 20


def _refuse(archive_name: str, reason: str) -> DwcaError:
    return DwcaError(f"{archive_name}: refusing the archive, {reason}")


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    # Unix zip tools keep the file's mode in the high 16 bits of external_attr.
    return stat.S_ISLNK(info.external_attr >> 16)


def _is_dataset_metadata(name: str) -> bool:
    folder, _, leaf = name.partition("/")
    return folder == "dataset" and leaf.endswith(".xml") and "/" not in leaf


def _check_member(info: zipfile.ZipInfo, archive_name: str) -> None:
    try:
        safe_member_name(info.filename.rstrip("/"))  # a folder entry is checked as the folder
    except DwcaError as exc:
        raise _refuse(archive_name, str(exc)) from None
    if _is_symlink(info):
        raise _refuse(archive_name, f"member {info.filename!r} is a symbolic link (an archive is refused as a whole for one)")
    if info.file_size >= RATIO_CHECKED_FROM_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
        ratio = info.file_size / max(info.compress_size, 1)
        raise _refuse(archive_name, f"member {info.filename!r} would inflate {info.compress_size} bytes to {info.file_size} "
                                    f"({ratio:.0f}:1, more than {MAX_COMPRESSION_RATIO}:1): a zip bomb?")


def check_members(archive: zipfile.ZipFile, archive_name: str) -> None:
    """DwcaError naming the first problem: too many members, an unsafe name, a symlink, a bomb-like ratio."""
    members = archive.infolist()
    metadata = sum(1 for info in members if _is_dataset_metadata(info.filename))
    if len(members) - metadata > MAX_MEMBERS or metadata > MAX_DATASET_METADATA_MEMBERS:
        raise _refuse(archive_name, f"it has {len(members)} members ({metadata} of them dataset/*.xml), more than {MAX_MEMBERS} "
                                    f"(and {MAX_DATASET_METADATA_MEMBERS} dataset/*.xml): a zip bomb?")
    for info in members:
        _check_member(info, archive_name)


def _free_bytes(folder: str) -> int:
    existing = os.path.abspath(folder)
    while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)  # the cache folder is created on first use
    return shutil.disk_usage(existing).free


def check_free_space(folder: str, needed: int, archive_name: str) -> None:
    """DwcaError unless the local ``folder`` has ``needed`` bytes free (a gs:// folder has no such limit)."""
    if folder.startswith("gs://"):
        return
    free = _free_bytes(folder)
    if needed > free:
        raise _refuse(archive_name, f"extracting it needs {needed} bytes but the cache folder {folder} has {free} bytes free "
                                    "(point BEAM_GBIF_CACHE or --dwca_root_path at a larger disk)")
