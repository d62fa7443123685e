"""Live progress bars on a terminal, for local runs (the FnApiRunner runs every DoFn in this process).

``run()`` switches them on with ``live_bars(True)`` when stderr is a terminal and the runner is
local; a DoFn then drives ``bar(phase)`` from its own thread. Everywhere else (a pipe, CI, Dataflow
workers, which never switch them on) ``bar`` returns None and the DoFn logs its periodic line.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import threading
from collections.abc import Iterator
from typing import Any

_lock = threading.Lock()
_enabled = False
_bars: dict[str, Any] = {}
_tallies: dict[int, list[int]] = {}  # id(bar) -> [failures, bytes]

# done/total, rate, elapsed<ETA, then the phase's own figures (failures, bytes); without a total, done and rate.
_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
_FORMAT_NO_TOTAL = "{desc}: {n_fmt} {unit} [{elapsed}, {rate_fmt}{postfix}]"


@contextlib.contextmanager
def live_bars(enabled: bool) -> Iterator[None]:
    """Bars may be drawn while the block runs (when ``enabled``); all of them are closed at its end."""
    global _enabled
    _enabled = enabled
    try:
        yield
    finally:
        with _lock:
            _enabled = False
            for shown in _bars.values():
                shown.close()
            _bars.clear()
            _tallies.clear()


def bar(phase: str, unit: str = "files") -> Any | None:
    """The one bar of ``phase`` in this process (shared by the DoFn threads), or None when bars are off."""
    if not _enabled:
        return None
    with _lock:
        if phase not in _bars:
            from tqdm import tqdm  # only a terminal run needs it

            # Phases follow each other (downloads wait for the whole selection): the earlier bar ends at its final count.
            for done in _bars.values():
                done.close()
            _bars.clear()

            # shutil's size falls back to 80x24 where a terminal reports 0x0 (a new pseudo-terminal): tqdm would draw nothing.
            size = shutil.get_terminal_size()
            _bars[phase] = tqdm(desc=phase, unit=unit, unit_scale=False, file=sys.stderr,
                                bar_format=_FORMAT_NO_TOTAL, ncols=size.columns, nrows=size.lines, leave=True)
        return _bars[phase]


def set_total(shown: Any, total: int) -> None:
    """Once the total is known (sampling done), the bar shows done/total and an ETA."""
    if shown is not None and shown.total != total:
        shown.total = total
        shown.bar_format = _FORMAT
        shown.refresh()



def advance(shown: Any, failed: bool, nbytes: int) -> None:
    """One more item done: the bar's count, its failures and bytes (summed over every thread that drives it)."""
    with _lock:
        tally = _tallies.setdefault(id(shown), [0, 0])
        tally[0] += int(failed)
        tally[1] += nbytes
        failures, total_bytes = tally
    shown.set_postfix_str(f"{failures} failed, {_megabytes(total_bytes)}", refresh=False)
    shown.update(1)


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


def tick(phase: str, count: int, unit: str) -> None:
    """``count`` more items read in ``phase`` (total unknown: done and rate); nothing when bars are off."""
    shown = bar(phase, unit) if count else None
    if shown is not None:
        shown.update(count)


def write_line(text: str) -> bool:
    """Prints ``text`` above the live bars (a plain write would land inside a bar's line); False when no bar is drawn."""
    with _lock:
        if not _bars:
            return False
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)
    return True
