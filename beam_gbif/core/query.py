"""Validation of ``--query`` against GBIF's occurrence search parameters, and its request parameters.

GBIF ignores parameters it does not know, so a typo (``speciesKy``) would silently search all
of GBIF: the client refuses unknown fields here, naming the close matches.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

from beam_gbif.core.errors import OptionError

# GBIF occurrence search parameters (https://techdocs.gbif.org/en/openapi/v1/occurrence#/Searching%20occurrences).
OCCURRENCE_SEARCH_PARAMETERS: tuple[str, ...] = (
    "acceptedTaxonKey", "associatedSequences", "basisOfRecord", "bed", "biostratigraphy", "catalogNumber", "checklistKey",
    "classKey", "collectionCode", "collectionKey", "continent", "coordinateUncertaintyInMeters", "country", "crawlId",
    "datasetId", "datasetKey", "datasetName", "decimalLatitude", "decimalLongitude", "degreeOfEstablishment", "depth",
    "distanceFromCentroidInMeters", "dwcaExtension", "earliestAgeOrLowestStage", "earliestEonOrLowestEonothem",
    "earliestEpochOrLowestSeries", "earliestEraOrLowestErathem", "earliestPeriodOrLowestSystem", "elevation", "endDayOfYear",
    "establishmentMeans", "eventDate", "eventId", "familyKey", "fieldNumber", "formation", "gadmGid", "gadmLevel0Gid",
    "gadmLevel1Gid", "gadmLevel2Gid", "gadmLevel3Gid", "gbifId", "gbifRegion", "genusKey", "geoDistance", "geologicalTime",
    "geometry", "georeferencedBy", "group", "hasCoordinate", "hasGeospatialIssue", "higherGeography",
    "highestBiostratigraphicZone", "hostingOrganizationKey", "identifiedBy", "identifiedById", "institutionCode",
    "institutionKey", "installationKey", "isInCluster", "isSequenced", "island", "islandGroup", "issue", "iucnRedListCategory",
    "kingdomKey", "lastInterpreted", "latestAgeOrHighestStage", "latestEonOrHighestEonothem", "latestEpochOrHighestSeries",
    "latestEraOrHighestErathem", "latestPeriodOrHighestSystem", "license", "lifeStage", "lithostratigraphy", "locality",
    "lowestBiostratigraphicZone", "mediaType", "member", "modified", "month", "networkKey", "occurrenceId", "occurrenceStatus",
    "orderKey", "organismId", "organismQuantity", "organismQuantityType", "otherCatalogNumbers", "parentEventId", "pathway",
    "phylumKey", "preparations", "previousIdentifications", "programme", "projectId", "protocol", "publishedByGbifRegion",
    "publishingCountry", "publishingOrg", "q", "recordNumber", "recordedBy", "recordedById", "relativeOrganismQuantity",
    "repatriated", "sampleSizeUnit", "sampleSizeValue", "samplingProtocol", "scientificName", "sex", "speciesKey",
    "startDayOfYear", "stateProvince", "subgenusKey", "taxonConceptId", "taxonId", "taxonKey", "taxonomicStatus",
    "typeStatus", "verbatimScientificName", "verbatimTaxonId", "waterBody", "year",
)
_BY_LOWER_NAME = {name.lower(): name for name in OCCURRENCE_SEARCH_PARAMETERS}
# Paging and facets are planned by beam-gbif itself.
RESERVED_PARAMETERS = frozenset({"limit", "offset", "facet", "facetlimit", "facetoffset", "facetmincount", "facetmultiselect"})

# Occurrence (record) fields whose search parameter has another name: for filtering a stream.
SEARCH_PARAMETER_OF_FIELD: dict[str, str] = {
    "countryCode": "country",
    "publishingOrgKey": "publishingOrg",
    "gbifID": "gbifId",
    "occurrenceID": "occurrenceId",
    "taxonID": "taxonId",
    "datasetID": "datasetId",
    "eventID": "eventId",
}


def canonical_parameter(field: str) -> str:
    """GBIF's spelling of search parameter ``field`` (case-insensitive); OptionError if there is none."""
    lowered = field.strip().lower()
    if lowered in RESERVED_PARAMETERS:
        raise OptionError(f"--query field {field!r} is not allowed: beam-gbif plans paging and facets itself")
    if lowered in _BY_LOWER_NAME:
        return _BY_LOWER_NAME[lowered]
    close = difflib.get_close_matches(field, OCCURRENCE_SEARCH_PARAMETERS, n=3, cutoff=0.6)
    close += [n for n in difflib.get_close_matches(lowered, list(_BY_LOWER_NAME), n=3, cutoff=0.6) if _BY_LOWER_NAME[n] not in close]
    hint = f"; did you mean {', '.join(repr(_BY_LOWER_NAME.get(c, c)) for c in close[:3])}?" if close else ""
    raise OptionError(f"--query field {field!r} is not a GBIF occurrence search parameter{hint}")


def search_parameter_for_field(field: str) -> str | None:
    """The search parameter that filters occurrence field ``field`` (``countryCode`` → ``country``), or None."""
    name = SEARCH_PARAMETER_OF_FIELD.get(field, field)
    return _BY_LOWER_NAME.get(name.lower())


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, (dict, list)):
        raise OptionError(f"--query has an unsupported value {value!r}")
    return str(value)


def validate_query(query: Mapping[str, Sequence[object] | object], *, media_type: str | None = None) -> dict[str, list[str]]:
    """``--query`` (as parsed by options.parse_query) → GBIF search parameters, values as lists (repeated = OR).

    Field names get GBIF's spelling; ``mediaType`` is set to ``media_type`` unless the query
    gives it; unknown or reserved fields raise OptionError naming them.
    """
    parameters: dict[str, list[str]] = {}
    for field, value in query.items():
        name = canonical_parameter(str(field))
        values = [_text(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        if not values:
            raise OptionError(f"--query field {field!r} has an empty list of values")
        merged = parameters.setdefault(name, [])
        merged.extend(v for v in values if v not in merged)
    if media_type and "mediaType" not in parameters:
        parameters["mediaType"] = [media_type]
    return parameters
