"""AssignSplits: whole streams to named splits (``--subset_streams``), the rest by a seeded
hash of the occurrence key (``--random_subsets``), so all media of an occurrence share a split.

Rules of ``--subset_streams`` are tried in the order given; a rule is an object of field to
value(s) — every field must match, any listed value of a field matches — or ``"*"``, which
takes every record no other rule took. A field is resolved first against
``--split_streams_by`` (its value is read from ``record.stream``), then against the record's
own fields (``datasetKey`` or ``dataset_key``; ``gbifID``/``key`` is ``occurrence_key``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import apache_beam as beam

from beam_gbif.core.errors import OptionError
from beam_gbif.core.records import MediaRecord
from beam_gbif.core.split_rules import Rule, check_ratios_sum, check_split_name, compile_rules, field_value, random_split


class _AssignSplit(beam.DoFn):
    def __init__(self, rules: list[Rule], catch_all: str, boundaries: list[tuple[float, str]], seed: int):
        self._rules = rules
        self._catch_all = catch_all
        self._boundaries = boundaries
        self._seed = seed

    def split_of(self, record: MediaRecord) -> str:
        for split, conditions in self._rules:
            if all(field_value(record, getter) in values for getter, values in conditions):
                return split
        if self._catch_all:
            return self._catch_all
        return random_split(record.occurrence_key, self._boundaries, self._seed)

    def process(self, record: MediaRecord) -> Iterable[MediaRecord]:
        # A split already set came from the user's own URL list (or an earlier run's manifest): it wins.
        yield record if record.split else record.replace(split=self.split_of(record))


@dataclasses.dataclass(frozen=True)
class SplitSettings:
    """``random_subsets``: split name → ratio (ratios sum to 1); ``subset_streams``: split name → a
    field rule or "*" (whole streams); ``split_streams_by``: the stream fields a rule may name;
    ``seed``: of the random split. Neither option: every record keeps ``split == ""``."""

    random_subsets: Mapping[str, float] = dataclasses.field(default_factory=dict)
    subset_streams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    split_streams_by: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "split_streams_by", tuple(self.split_streams_by))
        for name in self.random_subsets:
            check_split_name(name, "--random_subsets")
        check_ratios_sum(dict(self.random_subsets))


class AssignSplits(beam.PTransform):
    """Sets ``MediaRecord.split``; with neither option every record keeps ``split == ""``."""

    def __init__(self, settings: SplitSettings = SplitSettings()):
        super().__init__()
        ratios = dict(settings.random_subsets or {})
        self._rules, self._catch_all = compile_rules(settings.subset_streams or {}, list(settings.split_streams_by))
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
        self._seed = settings.seed

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
