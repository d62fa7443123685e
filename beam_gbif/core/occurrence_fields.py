"""``--extra_fields``: the fields of GBIF occurrence records a run may carry into every record.

The API source refuses an unknown field (GBIF would silently answer without it, and every record
would get an empty value); the names are the fields of GBIF's occurrence JSON, which are more than
its search parameters (``family``, ``species``, ``countryCode`` are fields, not parameters). A DwC-A
names its own columns: there a term by short name or URI is looked up in the archive, and a term it
lacks is an empty value, as a field missing on one API record is.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from beam_gbif.core.errors import OptionError
from beam_gbif.core.query import OCCURRENCE_SEARCH_PARAMETERS

# Fields of an occurrence in GBIF's API answers (https://techdocs.gbif.org/en/openapi/v1/occurrence) beyond the
# search parameters: the interpreted taxonomy, places, dates and Darwin Core terms it passes through.
_RECORD_ONLY_FIELDS = (
    "key", "gbifID", "kingdom", "phylum", "class", "order", "family", "genus", "subgenus", "species", "genericName",
    "specificEpithet", "infraspecificEpithet", "taxonRank", "acceptedScientificName", "vernacularName", "speciesKey",
    "countryCode", "stateProvince", "municipality", "county", "locality", "day", "dateIdentified", "eventTime",
    "verbatimEventDate", "coordinatePrecision", "geodeticDatum", "individualCount", "occurrenceRemarks",
    "identificationRemarks", "habitat", "rightsHolder", "rights", "accessRights", "bibliographicCitation", "references",
    "language", "ownerInstitutionCode", "datasetID", "publishingOrgKey", "protocol", "lastCrawled", "lastParsed",
    "scientificNameAuthorship", "higherClassification", "nomenclaturalCode", "verbatimLocality", "verbatimElevation",
    "verbatimDepth", "minimumElevationInMeters", "maximumElevationInMeters", "minimumDepthInMeters", "maximumDepthInMeters",
    "recordedByID", "identifiedByID", "occurrenceID", "organismID", "eventID", "parentEventID", "taxonID",
    "acceptedNameUsageID", "identificationQualifier", "identificationVerificationStatus", "associatedMedia",
    "associatedReferences", "dynamicProperties", "fieldNotes", "eventRemarks", "georeferenceSources",
    "georeferenceProtocol", "georeferenceRemarks", "footprintWKT", "type", "modified", "institutionID", "collectionID",
    "datasetName", "iucnRedListCategory", "isInCluster", "issues", "elevationAccuracy", "depthAccuracy",
)
OCCURRENCE_FIELDS = frozenset(OCCURRENCE_SEARCH_PARAMETERS) | frozenset(_RECORD_ONLY_FIELDS)
_BY_LOWER_NAME = {name.lower(): name for name in OCCURRENCE_FIELDS}


def short_name(field: str) -> str:
    """A term's short name: ``http://rs.tdwg.org/dwc/terms/family`` → ``family`` (a short name stays as it is)."""
    return field.rstrip("/").rsplit("/", 1)[-1].strip()


def check_extra_fields(fields: Sequence[str], *, source: str) -> tuple[str, ...]:
    """The fields, checked (the API source: each must be an occurrence field) and without repeats.

    An OptionError names an unknown field and its close matches; a field given twice is one field.
    """
    checked: dict[str, None] = {}
    for field in fields:
        name = short_name(field)
        if not name:
            raise OptionError(f"--extra_fields: {field!r} names no field")
        if source == "api" and name not in OCCURRENCE_FIELDS:
            known = _BY_LOWER_NAME.get(name.lower())
            close = [known] if known else difflib.get_close_matches(name, sorted(OCCURRENCE_FIELDS), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise OptionError(f"--extra_fields: {field!r} is not a field of GBIF occurrence records{hint}")
        checked[field] = None
    return tuple(checked)
