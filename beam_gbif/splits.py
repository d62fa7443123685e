"""AssignSplits: whole streams to named splits (``--subset_streams``), the rest by a seeded
hash of the occurrence key (``--random_subsets``), so all media of an occurrence share a split.

Rules of ``--subset_streams`` are tried in the order given; a rule is an object of field to
value(s) — every field must match, any listed value of a field matches — or ``"*"``, which
takes every record no other rule took. A field is resolved first against
``--split_streams_by`` (its value is read from ``record.stream``), then against the record's
own fields (``datasetKey`` or ``dataset_key``; ``gbifID``/``key`` is ``occurrence_key``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam

from beam_gbif.options import (
    GbifMediaOptions,
    OptionError,
    check_ratios_sum,
    check_split_name,
    parse_csv_list,
    parse_ratios,
    parse_subset_streams,
)
from beam_gbif.records import FIELD_NAMES, MediaRecord
from beam_gbif.sampling_hash import seeded_unit

SPLIT_PURPOSE = "random-subsets"
CATCH_ALL = "*"

_RECORD_FIELD_ALIASES = {"gbifid": "occurrence_key", "key": "occurrence_key", "occurrencekey": "occurrence_key", "format": "media_format"}
# Fields fixed later in the pipeline or computed from others cannot route a stream.
_NOT_ROUTABLE = frozenset({"split", "status", "path", "bytes", "sha256", "content_type", "error", "stream"})
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


def _field_value(record: MediaRecord, getter: FieldGetter) -> str:
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


class _AssignSplit(beam.DoFn):
    def __init__(self, rules: list[Rule], catch_all: str, boundaries: list[tuple[float, str]], seed: int):
        self._rules = rules
        self._catch_all = catch_all
        self._boundaries = boundaries
        self._seed = seed

    def split_of(self, record: MediaRecord) -> str:
        for split, conditions in self._rules:
            if all(_field_value(record, getter) in values for getter, values in conditions):
                return split
        if self._catch_all:
            return self._catch_all
        return random_split(record.occurrence_key, self._boundaries, self._seed)

    def process(self, record: MediaRecord) -> Iterable[MediaRecord]:
        # A split already set came from the user's own URL list (or an earlier run's manifest): it wins.
        yield record if record.split else record.replace(split=self.split_of(record))


class AssignSplits(beam.PTransform):
    """Sets ``MediaRecord.split``; with neither option every record keeps ``split == ""``."""

    def __init__(
        self,
        *,
        random_subsets: Mapping[str, float] | None = None,
        subset_streams: Mapping[str, Any] | None = None,
        split_streams_by: Sequence[str] = (),
        seed: int = 0,
    ):
        super().__init__()
        ratios = dict(random_subsets or {})
        for name in ratios:
            check_split_name(name, "--random_subsets")
        check_ratios_sum(ratios)
        self._rules, self._catch_all = compile_rules(subset_streams or {}, list(split_streams_by))
        if self._rules and not self._catch_all and not ratios:
            raise OptionError(
                '--subset_streams: records that match no rule need a split: add a catch-all such as "train": "*", or give --random_subsets'
            )
        if self._catch_all and ratios:
            raise OptionError(
                f'--subset_streams gives every unmatched record to {self._catch_all!r} ("*"), so --random_subsets would never apply; '
                "drop one of them"
            )
        self._boundaries = _cumulative([(name, ratio) for name, ratio in ratios.items() if ratio > 0])
        self._seed = seed

    @classmethod
    def from_options(cls, options: GbifMediaOptions) -> AssignSplits:
        return cls(
            random_subsets=parse_ratios(options.random_subsets),
            subset_streams=parse_subset_streams(options.subset_streams),
            split_streams_by=parse_csv_list(options.split_streams_by),
            seed=options.seed,
        )

    @property
    def assigns_splits(self) -> bool:
        return bool(self._rules or self._catch_all or self._boundaries)

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        if not self.assigns_splits:
            return records
        return records | "AssignSplit" >> beam.ParDo(_AssignSplit(self._rules, self._catch_all, self._boundaries, self._seed))


def _cumulative(ratios: list[tuple[str, float]]) -> list[tuple[float, str]]:
    boundaries, total = [], 0.0
    for name, ratio in ratios:
        total += ratio
        boundaries.append((total, name))
    return boundaries
