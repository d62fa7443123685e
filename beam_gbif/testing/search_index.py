"""The fake GBIF API's search index: stores of occurrences (recorded real ones, synthetic ones,
several combined) and the filters and facets over them, in numpy columns (see fake_gbif.py)."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from multidict import MultiDict, MultiDictProxy

_PARAMETER_FIELDS = {"country": "countryCode", "gbifId": "gbifID"}
# taxonKey matches an occurrence through any rank of its classification.
_TAXON_FIELDS = ("taxonKey", "acceptedTaxonKey", "speciesKey", "genusKey", "familyKey", "orderKey", "classKey", "phylumKey",
                 "kingdomKey")
# Paging, facet and presentation parameters: never filters.
CONTROL_PARAMETERS = frozenset({"limit", "offset", "facet", "facetLimit", "facetOffset", "facetMincount", "facetMultiselect",
                                 "hl", "q"})
RECORDED_SEARCH_NAME = re.compile(r"occurrence_search_(?P<field>[A-Za-z]+)_(?P<value>.+)_offset_(?P<offset>\d+)\.json$")
RECORDED_OCCURRENCE_NAME = re.compile(r"occurrence_(?P<key>\d+)\.json$")


class BadRequest(ValueError):
    """The request is invalid for GBIF: answered with HTTP 400 and this message."""


def facet_name(field: str) -> str:
    """GBIF's enum name of a search parameter: ``speciesKey`` → ``SPECIES_KEY``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", field).upper()


class RecordedOccurrences:
    """A store of real occurrence dicts (e.g. the results of recorded pages), same interface as SyntheticOccurrences."""

    def __init__(self, occurrences: Iterable[Mapping[str, Any]]) -> None:
        unique: dict[int, Mapping[str, Any]] = {}
        for occurrence in occurrences:
            unique.setdefault(int(occurrence["key"]), occurrence)
        self._occurrences = [dict(o) for o in unique.values()]
        self.size = len(self._occurrences)
        self._index_by_key = {int(o["key"]): i for i, o in enumerate(self._occurrences)}
        self._string_columns: dict[str, tuple[np.ndarray, list[str]] | None] = {}

    def __len__(self) -> int:
        return self.size

    def index_of_key(self, key: int) -> int | None:
        return self._index_by_key.get(int(key))

    def string_column(self, field: str) -> tuple[np.ndarray, list[str]] | None:
        if field not in self._string_columns:
            values = [o.get(field) for o in self._occurrences]
            if all(v is None or isinstance(v, (dict, list)) for v in values):
                self._string_columns[field] = None
            else:
                vocabulary: dict[str, int] = {}
                codes = np.array([vocabulary.setdefault(query_text(v), len(vocabulary)) for v in values], dtype=np.int32)
                self._string_columns[field] = (codes, list(vocabulary))
        return self._string_columns[field]

    def numeric_column(self, field: str) -> np.ndarray | None:
        if field not in ("year", "month", "day"):
            return None
        return np.array([o.get(field) if isinstance(o.get(field), int) else -1 for o in self._occurrences], dtype=np.int32)

    def media_type_mask(self, media_type: str) -> np.ndarray:
        return np.array([any(m.get("type") == media_type for m in o.get("media") or []) for o in self._occurrences], dtype=bool)

    def occurrence(self, index: int) -> dict[str, Any]:
        return self._occurrences[index]


def query_text(value: Any) -> str:
    if value is None or isinstance(value, (dict, list)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class SearchIndex:
    """Answers search queries over a store with numpy masks, caching matches per filter."""

    def __init__(self, store: Any, cache_size: int = 512) -> None:
        self.store = store
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def matching(self, query: MultiDictProxy | MultiDict) -> np.ndarray:
        """Indices (ascending) of the occurrences matching every filter parameter of ``query``."""
        filters = query_filters(query)
        with self._lock:
            cached = self._cache.get(filters)
            if cached is not None:
                self._cache.move_to_end(filters)
                return cached
        mask = np.ones(len(self.store), dtype=bool)
        for name, values in filters:
            field_mask = self._field_mask(name, values)
            if field_mask is not None:
                mask &= field_mask
        indices = np.flatnonzero(mask)
        with self._lock:
            self._cache[filters] = indices
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return indices

    def _field_mask(self, name: str, values: Sequence[str]) -> np.ndarray | None:
        """OR of ``values`` for one parameter; None when the store has no such field (ignored)."""
        if name == "mediaType":
            mask = np.zeros(len(self.store), dtype=bool)
            for value in values:
                mask |= self.store.media_type_mask(value)
            return mask
        numeric = self.store.numeric_column(name)
        if numeric is not None:
            return self._numeric_mask(name, numeric, values)
        fields = _TAXON_FIELDS if name == "taxonKey" else (_PARAMETER_FIELDS.get(name, name),)
        columns = [c for c in (self.store.string_column(f) for f in fields) if c is not None]
        if not columns:
            return None
        wanted = {v.strip().lower() for v in values}
        mask = np.zeros(len(self.store), dtype=bool)
        for codes, vocabulary in columns:
            matching_codes = [code for code, value in enumerate(vocabulary) if value.lower() in wanted]
            if matching_codes:
                mask |= np.isin(codes, matching_codes)
        return mask

    @staticmethod
    def _numeric_mask(name: str, column: np.ndarray, values: Sequence[str]) -> np.ndarray:
        mask = np.zeros(len(column), dtype=bool)
        for value in values:
            low_text, comma, high_text = value.partition(",")
            try:
                low = -np.inf if low_text.strip() in ("", "*") else int(low_text)
                high = low if not comma else (np.inf if high_text.strip() in ("", "*") else int(high_text))
            except ValueError:
                raise BadRequest(f"Invalid value for {name}: {value!r} is not a number or a range like 1990,2000") from None
            mask |= (column >= low) & (column <= high)
        return mask

    def facet_counts(self, indices: np.ndarray, field: str) -> list[tuple[str, int]]:
        """(value, count) over ``indices``, by count descending then value, like GBIF."""
        numeric = self.store.numeric_column(field)
        if numeric is not None:
            values, counts = np.unique(numeric[indices], return_counts=True)
            pairs = [(str(int(v)), int(c)) for v, c in zip(values, counts, strict=True) if v >= 0]
        else:
            column = self.store.string_column(_PARAMETER_FIELDS.get(field, field))
            if column is None:
                raise BadRequest(f"Invalid facet parameter: {field}")
            codes, vocabulary = column
            counts = np.bincount(codes[indices], minlength=len(vocabulary))
            pairs = [(vocabulary[code], int(count)) for code, count in enumerate(counts) if count > 0 and vocabulary[code]]
        pairs.sort(key=lambda pair: (-pair[1], pair[0]))
        return pairs


def query_filters(query: MultiDict | MultiDictProxy) -> tuple:
    return tuple(sorted((name, tuple(sorted(set(query.getall(name))))) for name in set(query.keys())
                        if name not in CONTROL_PARAMETERS and not name.startswith("facet")))


class CombinedStore:
    """Several stores seen as one (synthetic occurrences plus recorded real ones)."""

    def __init__(self, stores: Sequence[Any]) -> None:
        self._stores = list(stores)
        self._starts = np.cumsum([0] + [len(s) for s in self._stores])
        self.size = int(self._starts[-1])

    def __len__(self) -> int:
        return self.size

    def _locate(self, index: int) -> tuple[Any, int]:
        part = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self._stores[part], index - int(self._starts[part])

    def index_of_key(self, key: int) -> int | None:
        for store, start in zip(self._stores, self._starts[:-1], strict=True):
            index = store.index_of_key(key)
            if index is not None:
                return int(start) + index
        return None

    def string_column(self, field: str) -> tuple[np.ndarray, list[str]] | None:
        columns = [s.string_column(field) for s in self._stores]
        if all(c is None for c in columns):
            return None
        vocabulary: dict[str, int] = {"": 0}
        parts = []
        for store, column in zip(self._stores, columns, strict=True):
            if column is None:
                parts.append(np.zeros(len(store), dtype=np.int32))
                continue
            codes, values = column
            remap = np.array([vocabulary.setdefault(v, len(vocabulary)) for v in values] or [0], dtype=np.int32)
            parts.append(remap[codes] if len(codes) else codes.astype(np.int32))
        return np.concatenate(parts), list(vocabulary)

    def numeric_column(self, field: str) -> np.ndarray | None:
        columns = [s.numeric_column(field) for s in self._stores]
        if all(c is None for c in columns):
            return None
        return np.concatenate([c.astype(np.int32) if c is not None else np.full(len(s), -1, dtype=np.int32)
                               for s, c in zip(self._stores, columns, strict=True)])

    def media_type_mask(self, media_type: str) -> np.ndarray:
        return np.concatenate([s.media_type_mask(media_type) for s in self._stores])

    def occurrence(self, index: int) -> dict[str, Any]:
        store, local = self._locate(index)
        return store.occurrence(local)
