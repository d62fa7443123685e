"""The split rules, pure: which split a record belongs to (``--subset_streams`` rules, then a seeded
hash of the occurrence key for ``--random_subsets``). AssignSplits (transforms/splits.py) applies them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from beam_gbif.core.errors import OptionError
from beam_gbif.core.hashing import seeded_unit
from beam_gbif.core.records import FIELD_NAMES, RESULT_FIELDS, MediaRecord, has_control_character, is_reserved_name

SPLIT_PURPOSE = "random-subsets"
CATCH_ALL = "*"

_RECORD_FIELD_ALIASES = {"gbifid": "occurrence_key", "key": "occurrence_key", "occurrencekey": "occurrence_key", "format": "media_format"}
# Fields fixed later in the pipeline or computed from others cannot route a stream.
_NOT_ROUTABLE = frozenset({"split", "stream", *RESULT_FIELDS})
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

# A field getter: ("stream", index) reads record.stream[index]; ("record", name) reads an attribute.
FieldGetter = tuple[str, Any]
Rule = tuple[str, tuple[tuple[FieldGetter, frozenset[str]], ...]]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def resolve_field(name: str, split_streams_by: Sequence[str]) -> FieldGetter:
    """Where a ``--subset_streams`` field's value lives in a record; OptionError if nowhere."""
    for index, stream_field in enumerate(split_streams_by):
        if stream_field == name:
            return ("stream", index)
    for index, stream_field in enumerate(split_streams_by):
        if stream_field.lower() == name.lower():
            return ("stream", index)
    routable = [field for field in FIELD_NAMES if field not in _NOT_ROUTABLE]
    snake = _CAMEL_BOUNDARY.sub("_", name).lower()
    for candidate in (name, snake, _RECORD_FIELD_ALIASES.get(name.lower(), "")):
        if candidate in routable:
            return ("record", candidate)
    raise OptionError(
        f"--subset_streams: field {name!r} is neither a --split_streams_by field ({', '.join(split_streams_by) or 'none given'}) "
        f"nor a record field ({', '.join(routable)})"
    )


def compile_rules(subset_streams: Mapping[str, Any], split_streams_by: Sequence[str]) -> tuple[list[Rule], str]:
    """The field rules in order, and the catch-all split (``""`` if none)."""
    rules: list[Rule] = []
    catch_all = ""
    for split, rule in subset_streams.items():
        check_split_name(split, "--subset_streams")
        if rule == CATCH_ALL:
            if catch_all:
                raise OptionError(f'--subset_streams: both {catch_all!r} and {split!r} are "*"; only one split can take the rest')
            catch_all = split
            continue
        if not isinstance(rule, Mapping) or not rule:
            raise OptionError(f'--subset_streams: the rule of {split!r} must be "*" or a non-empty object of field to values')
        conditions = []
        for field, values in rule.items():
            values = values if isinstance(values, list) else [values]
            if not values or any(isinstance(v, (dict, list)) or v is None for v in values):
                raise OptionError(f"--subset_streams: field {field!r} of {split!r} needs a value or a non-empty list of values")
            conditions.append((resolve_field(field, split_streams_by), frozenset(_text(v) for v in values)))
        rules.append((split, tuple(conditions)))
    return rules, catch_all


def field_value(record: MediaRecord, getter: FieldGetter) -> str:
    kind, where = getter
    if kind == "stream":
        return record.stream[where] if where < len(record.stream) else ""
    return _text(getattr(record, where))


def random_split(occurrence_key: int, boundaries: Sequence[tuple[float, str]], seed: int) -> str:
    """The split whose cumulative-ratio interval holds the occurrence's seeded unit value."""
    point = seeded_unit(seed, str(occurrence_key), purpose=SPLIT_PURPOSE)
    for upper, split in boundaries:
        if point < upper:
            return split
    return boundaries[-1][1]  # rounding: the ratios sum to 1 only within 1e-6


def check_split_name(name: Any, option: str) -> None:
    """A split name becomes a folder: one non-empty path segment, creatable on every OS.

    Refused rather than slugged: the user typed it, and a folder that silently differs from the
    name asked for would surprise more than a clear error.
    """
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise OptionError(f"{option}: {name!r} is not a valid split name (it becomes a folder name)")
    if has_control_character(name):
        raise OptionError(f"{option}: split name {name!r} holds a control character (a newline, a tab, ...); it becomes a folder name")
    if is_reserved_name(name):
        raise OptionError(f"{option}: split name {name!r} is a reserved device name on Windows (CON, PRN, AUX, NUL, COM0-9, LPT0-9); "
                          "it becomes a folder name")


def check_ratios_sum(ratios: dict[str, float]) -> None:
    total = sum(ratios.values())
    if ratios and abs(total - 1.0) > 1e-6:
        raise OptionError(f"--random_subsets ratios must sum to 1, they sum to {total:g}: {ratios}")
