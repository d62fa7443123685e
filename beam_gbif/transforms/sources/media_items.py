"""Occurrence + media items → MediaRecords: the one place both sources turn GBIF data into records."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from beam_gbif.core.licenses import normalize_license
from beam_gbif.core.occurrence_fields import short_name
from beam_gbif.core.records import DEFAULT_MEDIA_TYPE, MOVING_IMAGE, SOUND, STILL_IMAGE, MediaRecord
from beam_gbif.transforms.sampling.combiners import one_media_of_occurrence

_TYPE_BY_FORMAT_PREFIX = {"image/": STILL_IMAGE, "video/": MOVING_IMAGE, "audio/": SOUND}

# Names of the drop counters (Beam metrics in namespace "beam_gbif" and keys of stats.json).
DROPPED_NO_LABEL = "occurrences_without_label"
DROPPED_NO_MEDIA = "occurrences_without_media_of_type"
DROPPED_MEDIA_OTHER_TYPE = "media_of_other_type"
DROPPED_MEDIA_NO_URL = "media_without_url"
EXCLUDED_BY_LICENSE = "excluded_by_license"


def field_value(row: Mapping[str, Any], name: str) -> str:
    """The value of ``name`` in ``row`` as text, ``""`` when absent or empty.

    Field names match exactly, else case-insensitively, else by the last segment of a term
    URI (``http://rs.tdwg.org/dwc/terms/scientificName`` finds ``scientificName``).
    """
    value = row.get(name)
    if value is None:
        short = name.rstrip("/").rsplit("/", 1)[-1]
        lowered = short.lower()
        value = row.get(short)
        if value is None:
            value = next((v for k, v in row.items() if k.lower() == lowered), None)
    if value is None or isinstance(value, (dict, list)):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def media_type_of(item: Mapping[str, Any]) -> str:
    declared = (item.get("type") or "").strip()
    if declared:
        return declared
    media_format = (item.get("format") or "").strip().lower()
    return next((kind for prefix, kind in _TYPE_BY_FORMAT_PREFIX.items() if media_format.startswith(prefix)), "")


def _text(item: Mapping[str, Any], name: str) -> str:
    return (item.get(name) or "").strip()


def _media_record(item: Mapping[str, Any], common: Mapping[str, Any]) -> MediaRecord:
    """The record of one media item, with the fields its occurrence gives every item (``common``)."""
    raw_license = _text(item, "license")
    return MediaRecord(
        url=_text(item, "identifier"), media_format=_text(item, "format"), license=raw_license, license_code=normalize_license(raw_license),
        rights_holder=_text(item, "rightsHolder"), creator=_text(item, "creator"), publisher=_text(item, "publisher"),
        references=_text(item, "references"), **common,
    )


def media_records(
    occurrence: Mapping[str, Any],
    media: Iterable[Mapping[str, Any]],
    *,
    label_field: str,
    stream_fields: Sequence[str] = (),
    media_type: str = DEFAULT_MEDIA_TYPE,
    source: str = "",
    licenses: Collection[str] = (),
    one_media_seed: int | None = None,
    extra_fields: Sequence[str] = (),
) -> tuple[list[MediaRecord], Counter]:
    """Records for the media of ``occurrence`` of type ``media_type``, and what was dropped.

    ``licenses`` (codes), when given, keeps only media under those licences. ``one_media_seed``,
    when given, keeps one media per occurrence: the one SampleStreams' OneMediaPerOccurrence
    would keep. ``extra_fields``: occurrence fields (names or term URIs) stored in each record under
    their short name; a missing one is ``""``. Choosing here, where all media of an occurrence are
    together, saves the pipeline a shuffle by occurrence; filtering licences first means an
    occurrence keeps a usable image whenever it has one.
    """
    dropped: Counter = Counter()
    label = field_value(occurrence, label_field)
    if not label:
        dropped[DROPPED_NO_LABEL] += 1
        return [], dropped
    occurrence_key = int(field_value(occurrence, "key") or field_value(occurrence, "gbifID"))
    stream = tuple(field_value(occurrence, name) for name in stream_fields)
    dataset_key = field_value(occurrence, "datasetKey")
    extra = tuple((short_name(name), field_value(occurrence, name)) for name in extra_fields)
    common = {"label": label, "occurrence_key": occurrence_key, "stream": stream, "dataset_key": dataset_key, "media_type": media_type,
              "source": source, "extra": extra}
    records = []
    for item in media:
        if media_type_of(item) != media_type:
            dropped[DROPPED_MEDIA_OTHER_TYPE] += 1
        elif not (item.get("identifier") or "").strip():
            dropped[DROPPED_MEDIA_NO_URL] += 1
        else:
            records.append(_media_record(item, common))
    if not records:
        dropped[DROPPED_NO_MEDIA] += 1
    if licenses:
        usable = [record for record in records if record.license_code in licenses]
        if len(usable) < len(records):
            dropped[EXCLUDED_BY_LICENSE] += len(records) - len(usable)
        records = usable
    if one_media_seed is not None and len(records) > 1:
        records = [one_media_of_occurrence(records, one_media_seed)]
    return records, dropped
