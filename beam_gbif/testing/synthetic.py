"""Deterministic synthetic GBIF occurrences, shaped like the real search results.

    occurrences = SyntheticOccurrences(
        species_keys=[5352251, 3190653],
        dataset_keys=["7a3679ef-5582-4aaa-81f0-8c2545cafc81", "50c9509d-22c7-4a22-a47d-8c48425ef4a7"],
        per_stream=40,                      # occurrences per (speciesKey, datasetKey) stream
        media_base_url="http://127.0.0.1:8001",
        seed=0,
    )
    FakeGbifApi(occurrences)

A *stream* is one (speciesKey, datasetKey) pair; ``stream_sizes`` gives explicit sizes per
pair instead of ``per_stream``. The store is columnar (numpy arrays, one value per
occurrence) so that hundreds of thousands of occurrences cost a few MB and are filtered in
milliseconds; an occurrence dict is only built (``occurrence(i)``) for the page served.

Media: each occurrence carries 0-4 items (``media_count_weights``); an item is a Sound
(``audio/mpeg``) with probability ``sound_fraction``, else a StillImage (``image/jpeg``)
whose identifier is ``{media_base_url}/media/{name}.jpg``; ``missing_identifier_fraction``
of the items have no identifier, and ``duplicate_url_fraction`` of the occurrences reuse the
first URL of the previous occurrence (a URL shared by two occurrences). Licences are the
real strings found in GBIF data. Same arguments ⇒ the same occurrences, byte for byte.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Licence strings as they appear in real GBIF media items (see ../shared/data).
MEDIA_LICENSES: tuple[str, ...] = (
    "http://creativecommons.org/licenses/by/4.0/",
    "http://creativecommons.org/licenses/by-nc/4.0/",
    "http://creativecommons.org/publicdomain/zero/1.0/",
    "http://creativecommons.org/licenses/by-sa/4.0/",
    "http://creativecommons.org/licenses/by-nc-nd/4.0/",
    "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/legalcode#languages)",
    "All rights reserved",
    "",
)
_MEDIA_LICENSE_WEIGHTS = (0.40, 0.30, 0.08, 0.05, 0.05, 0.04, 0.04, 0.04)
OCCURRENCE_LICENSES: tuple[str, ...] = (
    "http://creativecommons.org/licenses/by/4.0/legalcode",
    "http://creativecommons.org/licenses/by-nc/4.0/legalcode",
    "http://creativecommons.org/publicdomain/zero/1.0/legalcode",
)
COUNTRY_CODES: tuple[str, ...] = ("DK", "US", "FR", "DE", "BR", "AU", "ZA", "JP")
BASES_OF_RECORD: tuple[str, ...] = ("HUMAN_OBSERVATION", "PRESERVED_SPECIMEN", "MACHINE_OBSERVATION")
_BASIS_WEIGHTS = (0.85, 0.10, 0.05)
_CREATORS: tuple[str, ...] = ("Max Roberts", "Ana Silva", "Jens Hansen", "Mei Tanaka", "Lea Martin")
_GENERA: tuple[str, ...] = ("Quercus", "Batrachoseps", "Amanita", "Fallopia", "Impatiens", "Vespa", "Solidago", "Rosa")
_EPITHETS: tuple[str, ...] = ("alba", "luciae", "muscaria", "japonica", "glandulifera", "velutina", "canadensis", "rugosa")
_FAMILIES = {"Quercus": "Fagaceae", "Batrachoseps": "Plethodontidae", "Amanita": "Amanitaceae", "Fallopia": "Polygonaceae",
             "Impatiens": "Balsaminaceae", "Vespa": "Vespidae", "Solidago": "Asteraceae", "Rosa": "Rosaceae"}
_KINGDOMS = {"Batrachoseps": "Animalia", "Vespa": "Animalia", "Amanita": "Fungi"}

MAX_MEDIA_PER_OCCURRENCE = 4
DEFAULT_FIRST_KEY = 1_000_000_000


def _stable_int(*parts: object) -> int:
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _stable_uuid(*parts: object) -> str:
    return str(uuid.UUID(bytes=hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=16).digest()))


class SyntheticOccurrences:
    """A columnar, seeded store of synthetic occurrences (see the module docstring)."""

    def __init__(
        self,
        species_keys: Sequence[int | str],
        dataset_keys: Sequence[str],
        per_stream: int = 40,
        *,
        stream_sizes: Mapping[tuple[int | str, str], int] | None = None,
        media_base_url: str = "http://127.0.0.1:9",
        seed: int = 0,
        media_count_weights: Sequence[float] = (0.1, 0.5, 0.25, 0.1, 0.05),
        sound_fraction: float = 0.1,
        missing_identifier_fraction: float = 0.03,
        duplicate_url_fraction: float = 0.02,
        years: tuple[int, int] = (1990, 2024),
        first_key: int = DEFAULT_FIRST_KEY,
    ) -> None:
        if not species_keys or not dataset_keys:
            raise ValueError("SyntheticOccurrences needs at least one species key and one dataset key")
        if len(media_count_weights) != MAX_MEDIA_PER_OCCURRENCE + 1:
            raise ValueError(f"media_count_weights needs {MAX_MEDIA_PER_OCCURRENCE + 1} weights (for 0..{MAX_MEDIA_PER_OCCURRENCE} items)")
        self.species_keys = [str(k) for k in species_keys]
        self.dataset_keys = [str(k) for k in dataset_keys]
        self.media_base_url = media_base_url.rstrip("/")
        self.seed = seed
        self.first_key = first_key
        sizes = {(str(s), str(d)): int(n) for (s, d), n in (stream_sizes or {}).items()}
        self.streams: list[tuple[str, str]] = [(s, d) for s in self.species_keys for d in self.dataset_keys]
        self.stream_sizes = [sizes.get(stream, per_stream if stream_sizes is None else 0) for stream in self.streams]
        size = sum(self.stream_sizes)
        self.size = size
        rng = np.random.default_rng(seed)

        stream_index = np.repeat(np.arange(len(self.streams), dtype=np.int32), self.stream_sizes)
        self._species_code = (stream_index // len(self.dataset_keys)).astype(np.int32)
        self._dataset_code = (stream_index % len(self.dataset_keys)).astype(np.int32)
        self._year = rng.integers(years[0], years[1] + 1, size=size, dtype=np.int16)
        self._month = rng.integers(1, 13, size=size, dtype=np.int8)
        self._day = rng.integers(1, 29, size=size, dtype=np.int8)
        self._country_code = rng.integers(0, len(COUNTRY_CODES), size=size, dtype=np.int8)
        self._basis_code = rng.choice(len(BASES_OF_RECORD), size=size, p=_BASIS_WEIGHTS).astype(np.int8)
        self._occurrence_license = rng.integers(0, len(OCCURRENCE_LICENSES), size=size, dtype=np.int8)

        weights = np.asarray(media_count_weights, dtype=float)
        self._media_count = rng.choice(MAX_MEDIA_PER_OCCURRENCE + 1, size=size, p=weights / weights.sum()).astype(np.int8)
        slots = (size, MAX_MEDIA_PER_OCCURRENCE)
        self._is_sound = rng.random(slots) < sound_fraction
        self._no_identifier = rng.random(slots) < missing_identifier_fraction
        self._media_license = rng.choice(len(MEDIA_LICENSES), size=slots, p=_MEDIA_LICENSE_WEIGHTS).astype(np.int8)
        self._creator = rng.integers(0, len(_CREATORS), size=size, dtype=np.int8)
        # An occurrence flagged here shares its first URL with the previous occurrence.
        self._shares_previous_url = rng.random(size) < duplicate_url_fraction
        if size:
            self._shares_previous_url[0] = False
            # Only an occurrence with media can share the first item of a previous one that has media.
            self._shares_previous_url[1:] &= (self._media_count[1:] > 0) & (self._media_count[:-1] > 0)
            shared = np.flatnonzero(self._shares_previous_url)
            self._is_sound[shared, 0] = self._is_sound[shared - 1, 0]

        present = np.arange(MAX_MEDIA_PER_OCCURRENCE)[None, :] < self._media_count[:, None]
        self._has_sound = (present & self._is_sound).any(axis=1)
        self._has_image = (present & ~self._is_sound).any(axis=1)
        self._publishing_orgs = [_stable_uuid("org", d) for d in self.dataset_keys]
        self._taxa: dict[str, dict[str, Any]] = {}

    # -- the store interface used by FakeGbifApi -------------------------------------------

    def __len__(self) -> int:
        return self.size

    def index_of_key(self, key: int) -> int | None:
        index = int(key) - self.first_key
        return index if 0 <= index < self.size else None

    def string_column(self, field: str) -> tuple[np.ndarray, list[str]] | None:
        """Codes per occurrence and the value of each code, for equality filters and facets."""
        taxon = {"speciesKey", "taxonKey", "acceptedTaxonKey"}
        if field in taxon:
            return self._species_code, list(self.species_keys)
        columns = {
            "datasetKey": (self._dataset_code, self.dataset_keys),
            "publishingOrgKey": (self._dataset_code, self._publishing_orgs),
            "countryCode": (self._country_code, list(COUNTRY_CODES)),
            "basisOfRecord": (self._basis_code, list(BASES_OF_RECORD)),
            "license": (self._occurrence_license, list(OCCURRENCE_LICENSES)),
        }
        if field in columns:
            codes, vocabulary = columns[field]
            return codes, list(vocabulary)
        names = {"scientificName": self._scientific_name, "species": self._species_name, "genus": self._genus,
                 "family": self._family, "kingdom": self._kingdom}
        if field in names:
            return self._species_code, [names[field](s) for s in self.species_keys]
        return None

    def numeric_column(self, field: str) -> np.ndarray | None:
        return {"year": self._year, "month": self._month, "day": self._day}.get(field)

    def media_type_mask(self, media_type: str) -> np.ndarray:
        if media_type == "StillImage":
            return self._has_image
        if media_type == "Sound":
            return self._has_sound
        return np.zeros(self.size, dtype=bool)

    def occurrence(self, index: int) -> dict[str, Any]:
        """The occurrence at ``index`` as GBIF's search API returns it."""
        species = self.species_keys[self._species_code[index]]
        dataset = self.dataset_keys[self._dataset_code[index]]
        key = self.first_key + index
        year, month, day = int(self._year[index]), int(self._month[index]), int(self._day[index])
        return {
            "key": key,
            "gbifID": str(key),
            "datasetKey": dataset,
            "publishingOrgKey": self._publishing_orgs[self._dataset_code[index]],
            "basisOfRecord": BASES_OF_RECORD[self._basis_code[index]],
            "occurrenceStatus": "PRESENT",
            **self._taxon(species),
            "year": year,
            "month": month,
            "day": day,
            "eventDate": f"{year:04d}-{month:02d}-{day:02d}",
            "countryCode": COUNTRY_CODES[self._country_code[index]],
            "license": OCCURRENCE_LICENSES[self._occurrence_license[index]],
            "occurrenceID": f"urn:synthetic:{self.seed}:{key}",
            "media": self._media(index),
        }

    # -- derived values --------------------------------------------------------------------

    def media_name(self, index: int, slot: int) -> str:
        return f"s{self.seed}-{self.first_key + index}-{slot}"

    def _media(self, index: int) -> list[dict[str, str]]:
        items = []
        creator = _CREATORS[self._creator[index]]
        for slot in range(int(self._media_count[index])):
            sound = bool(self._is_sound[index, slot])
            name = self.media_name(index, slot)
            if slot == 0 and self._shares_previous_url[index]:
                name = self.media_name(index - 1, 0)
            item = {
                "type": "Sound" if sound else "StillImage",
                "format": "audio/mpeg" if sound else "image/jpeg",
                "references": f"{self.media_base_url}/observations/{self.first_key + index}",
                "creator": creator,
                "publisher": "Synthetic GBIF",
                "license": MEDIA_LICENSES[self._media_license[index, slot]],
                "rightsHolder": creator,
            }
            if not self._no_identifier[index, slot]:
                item["identifier"] = f"{self.media_base_url}/media/{name}.{'mp3' if sound else 'jpg'}"
            items.append(item)
        return items

    def _taxon(self, species: str) -> dict[str, Any]:
        """The classification fields of a species (cached: hashing them per occurrence would dominate serving time)."""
        cached = self._taxa.get(species)
        if cached is None:
            species_key: int | str = int(species) if species.isdigit() else species
            cached = {
                "taxonKey": species_key,
                "speciesKey": species_key,
                "acceptedTaxonKey": species_key,
                "scientificName": self._scientific_name(species),
                "species": self._species_name(species),
                "genus": self._genus(species),
                "family": self._family(species),
                "kingdom": self._kingdom(species),
                "taxonRank": "SPECIES",
            }
            self._taxa[species] = cached
        return cached

    def _genus(self, species: str) -> str:
        return _GENERA[_stable_int("genus", species) % len(_GENERA)]

    def _species_name(self, species: str) -> str:
        return f"{self._genus(species)} {_EPITHETS[_stable_int('epithet', species) % len(_EPITHETS)]}{species[-3:]}"

    def _scientific_name(self, species: str) -> str:
        return f"{self._species_name(species)} Synthetic, 2024"

    def _family(self, species: str) -> str:
        return _FAMILIES[self._genus(species)]

    def _kingdom(self, species: str) -> str:
        return _KINGDOMS.get(self._genus(species), "Plantae")
