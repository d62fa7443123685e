"""Killing a job mid-run, as a crash would, for the kill-and-resume tests."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable


def kill_when(process: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120.0) -> None:
    """Waits until ``ready()`` (the job got going), then SIGKILLs the process's whole session.

    The process must have been started with ``start_new_session=True`` and ``stderr=PIPE``: a job
    that exits before it is ready fails the caller with the end of its stderr.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the first run never got going"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
    process.stderr.close()
