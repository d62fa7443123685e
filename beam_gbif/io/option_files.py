"""Option values given inline as JSON or as ``@path`` to a JSON file (``--query @q.json``).

A file's contents never appear in an error, only its path and what is wrong: the file may be
the wrong one (a credentials file), and errors end up in logs and job consoles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from beam_gbif.core.errors import OptionError


def json_or_file(option: str, text: str) -> tuple[Any, Path | None]:
    """JSON text, or the JSON of the file ``@path``; with that path (None for inline text).

    Inline text is quoted in its error (the user typed it); a file's text never is.
    """
    if not text.startswith("@"):
        try:
            return json.loads(text), None
        except json.JSONDecodeError as exc:
            raise OptionError(f"--{option} is not valid JSON ({exc.msg} at position {exc.pos}): {text[:200]!r}") from None
    path = Path(text[1:])
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        # from None here and below: a UnicodeDecodeError holds the bytes, a JSONDecodeError the whole text.
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise OptionError(f"--{option}: cannot read {path}: {reason}") from None
    try:
        return json.loads(content), path
    except json.JSONDecodeError as exc:
        raise OptionError(f"--{option} @{path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def shown(value: Any, path: Path | None) -> str:
    """A value for an error message: quoted when typed inline, only its type when it comes from a file."""
    return repr(value) if path is None else f"(a {type(value).__name__} in {path})"
