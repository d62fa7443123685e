"""The memory ceiling of the downloader: one byte budget per worker process (``--max_buffer_bytes``).

A body holds its reservation from just before its first byte is read until its file is written,
so bodies in flight and bodies waiting for a writer together stay within the budget. Beam may run
several DoFn instances (threads, each with its own event loop) in one worker process; they all
draw on the same budget, so it is thread-safe and wakes a waiter on the waiter's own loop.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import sys
import threading
from dataclasses import dataclass, field


@dataclass
class _Waiter:
    size: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    granted: bool = field(default=False)


class ByteBudget:
    """Reservations of bytes that never sum past ``limit``, granted first come, first served.

    A reservation larger than the whole budget is granted once nothing else is held, so a body
    bigger than the budget still downloads, alone. ``peak`` is the high-water mark of held bytes.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0
        self._lock = threading.Lock()
        self._waiters: collections.deque[_Waiter] = collections.deque()

    def _fits(self, size: int) -> bool:
        return self.held + size <= self.limit or self.held == 0

    def _take(self, size: int) -> None:
        self.held += size
        self.peak = max(self.peak, self.held)

    def try_reserve(self, size: int) -> bool:
        """Holds ``size`` bytes if they fit now, without waiting; False (nothing held) otherwise."""
        with self._lock:
            if not self._waiters and self._fits(size):
                self._take(size)
                return True
        return False

    async def reserve(self, size: int) -> None:
        """Waits until ``size`` bytes fit, then holds them (give them back with ``release``)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if not self._waiters and self._fits(size):
                self._take(size)
                return
            waiter = _Waiter(size, loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await waiter.future
        except asyncio.CancelledError:
            with self._lock:
                granted = waiter.granted
                if not granted:
                    self._waiters.remove(waiter)
            if granted:  # granted while being cancelled: the bytes go back to the others
                self.release(size)
            else:
                self._grant_waiting()  # a big waiter at the head may have been blocking smaller ones
            raise

    def grow(self, size: int) -> None:
        """Holds ``size`` more bytes at once: only for a holder already over the limit (it is alone)."""
        with self._lock:
            self._take(size)

    def release(self, size: int) -> None:
        with self._lock:
            self.held -= size
        self._grant_waiting()

    def _grant_waiting(self) -> None:
        granted = []
        with self._lock:
            while self._waiters and self._fits(self._waiters[0].size):
                waiter = self._waiters.popleft()
                waiter.granted = True
                self._take(waiter.size)
                granted.append(waiter)
        for waiter in granted:
            try:
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)
            except RuntimeError:  # its loop is closed: nobody will use these bytes
                self.release(waiter.size)


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


_PROCESS_BUDGETS: dict[int, ByteBudget] = {}
_PROCESS_LOCK = threading.Lock()
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def keep_bodies_out_of_the_heap() -> None:
    """Blocks of 1 MiB and more (bodies) get mappings of their own, given back to the OS when freed.

    Without this, glibc raises its mmap threshold to the size of the first large block freed and
    serves later bodies from the heap, where freed bodies stay resident: the process then holds
    more than the budget (8 MiB bodies, --max_buffer_bytes 1 GiB: peak RSS 1497 MiB, 1390 with it).
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, 1 << 20)
        except (OSError, AttributeError):  # another C library: its own rules
            pass


def process_budget(limit: int) -> ByteBudget:
    """The worker process's budget of ``limit`` bytes, shared by every DoFn instance (thread) in it."""
    with _PROCESS_LOCK:
        if not _PROCESS_BUDGETS:
            keep_bodies_out_of_the_heap()
        budget = _PROCESS_BUDGETS.get(limit)
        if budget is None:
            budget = _PROCESS_BUDGETS[limit] = ByteBudget(limit)
        return budget


class Lease:
    """What one body holds from its first byte until its file is written: a worker slot and its bytes.

    Holding the slot through the write (not only through the read) is what bounds the bodies
    waiting for a writer. ``release`` gives both back, once.
    """

    def __init__(self, slots: asyncio.Semaphore, budget: ByteBudget) -> None:
        self._slots = slots
        self.budget = budget
        self.reserved = 0
        self._released = False

    async def reserve(self, size: int) -> None:
        await self.budget.reserve(size)
        self.reserved += size

    def try_reserve(self, size: int) -> bool:
        if self.budget.try_reserve(size):
            self.reserved += size
            return True
        return False

    def cover(self, total: int) -> None:
        """Grows the reservation to ``total`` bytes without waiting (allowed only when already alone)."""
        if total > self.reserved:
            self.budget.grow(total - self.reserved)
            self.reserved = total

    def trim(self, total: int) -> None:
        """Gives back what was reserved beyond ``total`` (a body without Content-Length reserved the most it may be)."""
        if total < self.reserved:
            self.budget.release(self.reserved - total)
            self.reserved = total

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self.budget.release(self.reserved)
        self.reserved = 0
        self._slots.release()
