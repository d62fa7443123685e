"""Local files, written whole or not at all: a hidden temp file beside the final name, then a rename.

Temp files are ``.<name>.<id>.tmp``; ``is_temp_name`` and ``temp_target`` recognise them, so a run can
remove what a killed run left. Written with plain system calls and without fsync by default: a file
survives SIGKILL of the writer (the rename is atomic); surviving a power loss is the file system's
business unless ``fsync=True``.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable
from typing import Any, BinaryIO

TEMP_SUFFIX = ".tmp"


class _TempIds:
    """Temp-file ids unique per process (a random prefix, new in a forked child) and per write (a counter): no
    random bytes per file, and two writers of one name never share a temp file."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = uuid.uuid4().hex[:8]
        self.counter = itertools.count()  # next() on it is atomic under the GIL

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


_TEMP_IDS = _TempIds()
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def temp_name(name: str) -> str:
    """The hidden temp file a write of ``name`` goes through (``is_temp_name`` recognises it)."""
    return f".{name}.{_TEMP_IDS.next()}{TEMP_SUFFIX}"


def _write_bytes(path: str, data: bytes, fsync: bool) -> None:
    """``data`` into a new file with plain system calls (no buffered file object: no stat, ioctl or seek)."""
    fd = os.open(path, _CREATE_FLAGS, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def write_local(final: str, data: bytes | Callable[[BinaryIO], Any], *, fsync: bool = False) -> None:
    """The local half of the rule: temp file beside ``final``, then rename; the temp file never outlives a failure.

    ``data``: the bytes, or a function that fills a binary file."""
    folder, name = os.path.split(final)
    temp = os.path.join(folder, temp_name(name))
    try:
        if callable(data):
            with open(temp, "xb") as handle:
                data(handle)
                if fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
        else:
            _write_bytes(temp, data, fsync)
        os.replace(temp, final)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


def is_temp_name(name: str) -> bool:
    """True for the hidden temp files LocalStore.write_atomic uses (``.<name>.<id>.tmp``)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def temp_target(name: str) -> str:
    """The final name a temp file was written for (``.abc.jpg.1a2b3c.tmp`` → ``abc.jpg``)."""
    return name[1:-len(TEMP_SUFFIX)].rsplit(".", 1)[0]
