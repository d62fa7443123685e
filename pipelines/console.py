"""What a person sees in the terminal: log levels, one-line errors with their exit codes.

At the default verbosity a run shows beam-gbif's NOTICE lines (read plan, progress), its
summary, and warnings and errors from anywhere; ``--log_level info`` adds beam-gbif's details
(retries), ``debug`` adds every library's INFO lines (Apache Beam's) and the tracebacks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

from beam_gbif import NOTICE
from beam_gbif.core.errors import OptionError
from beam_gbif.io.gbif.client import GbifApiError
from beam_gbif.io.store import StoreError
from beam_gbif.transforms.live_bars import write_line

LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LOG_LEVEL = "notice"
# (beam-gbif's own loggers, every other logger) per --log_level.
_THRESHOLDS = {
    "debug": (logging.DEBUG, logging.INFO),
    "info": (logging.INFO, logging.WARNING),
    DEFAULT_LOG_LEVEL: (NOTICE, logging.WARNING),
    "warning": (logging.WARNING, logging.WARNING),
    "error": (logging.ERROR, logging.ERROR),
}
_OWN_LOGGER = "beam_gbif"


class _PersonFormatter(logging.Formatter):
    """NOTICE lines as they are; other lines with their level and origin; tracebacks only when debugging."""

    def __init__(self, debug: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s" if debug else "%(levelname)s %(name)s: %(message)s")
        self._debug = debug

    def format(self, record: logging.LogRecord) -> str:
        if self._debug:
            return super().format(record)
        if record.levelno == NOTICE:
            return record.getMessage()
        # A copy without the traceback: the record is shared with any other handler (pytest's, say).
        plain = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None})
        return super().format(plain)


class _AboveBarsHandler(logging.StreamHandler):
    """Writes to stderr, above the live progress bars when a local run on a terminal draws them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if write_line(self.format(record)):
                return
        except Exception:  # noqa: BLE001 - logging must never fail a run; fall back to a plain write
            pass
        super().emit(record)


def _not_a_stage_failure(record: logging.LogRecord) -> bool:
    """Beam logs a failing step with its traceback; run() names the cause in one line instead."""
    return not (record.exc_info and record.name.startswith("apache_beam"))


@contextlib.contextmanager
def logging_for(level: str | None) -> Iterator[None]:
    """Logs to stderr at ``level`` (None: the default) while the block runs, then restores the loggers as they were."""
    level = level or DEFAULT_LOG_LEVEL
    own_threshold, other_threshold = _THRESHOLDS[level]
    root, own = logging.getLogger(), logging.getLogger(_OWN_LOGGER)
    saved = (root.level, own.level)
    handler = _AboveBarsHandler(sys.stderr)
    handler.setFormatter(_PersonFormatter(debug=level == "debug"))
    if level != "debug":
        handler.addFilter(_not_a_stage_failure)
    # Beam's PipelineOptions call logging.basicConfig(): its plain stderr handler would print every line a second time.
    plain = [h for h in root.handlers if type(h) is logging.StreamHandler]
    for old in plain:
        root.removeHandler(old)
    # Records of beam-gbif's loggers reach this root handler whatever the root's level (propagation skips it).
    root.addHandler(handler)
    root.setLevel(other_threshold)
    own.setLevel(own_threshold)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for old in plain:
            root.addHandler(old)
        root.setLevel(saved[0])
        own.setLevel(saved[1])


def check_credentials(output: str) -> None:
    """A gs:// ``--output`` needs Google Cloud credentials; checked before anything lists it (Beam would retry for a
    minute, then go on anonymously and fail later)."""
    if output.startswith("gs://") and not os.environ.get("STORAGE_EMULATOR_HOST"):
        import google.auth  # raises DefaultCredentialsError: describe_error names the fix

        google.auth.default()


def check_output(output: str) -> None:
    """A local ``--output`` must be a folder this process can create and write (bad usage otherwise, before any download)."""
    if not output or "://" in output:
        return
    path = os.path.abspath(os.path.expanduser(output))
    if os.path.exists(path) and not os.path.isdir(path):
        raise OptionError(f"--output {output}: exists and is not a folder; name a folder (it is created if missing)")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".beam-gbif-probe-"):
            pass
    except OSError as exc:
        raise OptionError(f"--output {output}: cannot write there ({exc.strerror or exc}); "
                          "choose a folder you can write to") from None


_CREDENTIALS_HINT = ("run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS to a service "
                     "account key, then run again")


def describe_error(exc: BaseException) -> tuple[str, int]:
    """One or two lines naming the cause and what to do, and the exit code: 2 bad usage, 1 a failed run."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (OptionError, StoreError)):
            return _strip_step(str(seen)), 2
        if isinstance(seen, GbifApiError):
            # A refused request (400 bad query, 404 wrong --gbif_api_url) is the user's input; 5xx or no answer is GBIF's side.
            refused = seen.status is not None and 400 <= seen.status < 500 and seen.status != 429
            return _strip_step(str(seen)), 2 if refused else 1
        if type(seen).__name__ == "DefaultCredentialsError":
            return f"no Google Cloud credentials found for gs:// access.\n  {_CREDENTIALS_HINT}", 1
        if isinstance(seen, PermissionError) or type(seen).__name__ == "Forbidden":
            return f"permission denied: {_last_line(seen)}\n  check the credentials and the rights on the output", 1
        seen = seen.__cause__ or seen.__context__
    return f"the pipeline failed: {_last_line(exc)}\n  run again with --log_level debug to see the traceback", 1


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return _strip_step(lines[-1]) if lines else type(exc).__name__


def _strip_step(message: str) -> str:
    # Beam appends " [while running 'Step/Name']" to an error raised inside a step.
    head, sep, _ = message.partition(" [while running '")
    return head if sep else message
