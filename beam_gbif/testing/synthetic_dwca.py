"""A synthetic GBIF Darwin Core Archive for tests and benchmarks, streamed to disk.

It has the real 2021 GBIF download's columns (250 core terms, the 15 multimedia terms) and a
meta.xml, metadata.xml and citations.txt of the same shape, with any number of rows. Rows are
written through a streaming zip member, so two million occurrences need no more memory than ten.
Every value derives from a blake2b hash of (seed, row), so the same arguments give the same bytes.

    summary = write_synthetic_dwca("/tmp/big.zip", occurrences=2_000_000, media=3_000_000)
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import zipfile
from pathlib import Path
from xml.sax.saxutils import quoteattr

_CORE_COLUMNS: tuple[tuple[str, str], ...] = (
    (
        "http://rs.gbif.org/terms/1.0/",
        "gbifID"
    ),
    (
        "http://purl.org/dc/terms/",
        "abstract accessRights accrualMethod accrualPeriodicity accrualPolicy alternative audience available "
        "bibliographicCitation conformsTo contributor coverage created creator date dateAccepted dateCopyrighted "
        "dateSubmitted description educationLevel extent format hasFormat hasPart hasVersion identifier "
        "instructionalMethod isFormatOf isPartOf isReferencedBy isReplacedBy isRequiredBy isVersionOf issued language "
        "license mediator medium modified provenance publisher references relation replaces requires rights "
        "rightsHolder source spatial subject tableOfContents temporal title type valid"
    ),
    (
        "http://rs.tdwg.org/dwc/terms/",
        "institutionID collectionID datasetID institutionCode collectionCode datasetName ownerInstitutionCode "
        "basisOfRecord informationWithheld dataGeneralizations dynamicProperties occurrenceID catalogNumber "
        "recordNumber recordedBy individualCount organismQuantity organismQuantityType sex lifeStage "
        "reproductiveCondition behavior establishmentMeans occurrenceStatus preparations disposition "
        "associatedReferences associatedSequences associatedTaxa otherCatalogNumbers occurrenceRemarks organismID "
        "organismName organismScope associatedOccurrences associatedOrganisms previousIdentifications organismRemarks "
        "materialSampleID eventID parentEventID fieldNumber eventDate eventTime startDayOfYear endDayOfYear year month "
        "day verbatimEventDate habitat samplingProtocol samplingEffort sampleSizeValue sampleSizeUnit fieldNotes "
        "eventRemarks locationID higherGeographyID higherGeography continent waterBody islandGroup island countryCode "
        "stateProvince county municipality locality verbatimLocality verbatimElevation verbatimDepth "
        "minimumDistanceAboveSurfaceInMeters maximumDistanceAboveSurfaceInMeters locationAccordingTo locationRemarks "
        "decimalLatitude decimalLongitude coordinateUncertaintyInMeters coordinatePrecision pointRadiusSpatialFit "
        "verbatimCoordinateSystem verbatimSRS footprintWKT footprintSRS footprintSpatialFit georeferencedBy "
        "georeferencedDate georeferenceProtocol georeferenceSources georeferenceVerificationStatus georeferenceRemarks "
        "geologicalContextID earliestEonOrLowestEonothem latestEonOrHighestEonothem earliestEraOrLowestErathem "
        "latestEraOrHighestErathem earliestPeriodOrLowestSystem latestPeriodOrHighestSystem earliestEpochOrLowestSeries "
        "latestEpochOrHighestSeries earliestAgeOrLowestStage latestAgeOrHighestStage lowestBiostratigraphicZone "
        "highestBiostratigraphicZone lithostratigraphicTerms group formation member bed identificationID "
        "identificationQualifier typeStatus identifiedBy dateIdentified identificationReferences "
        "identificationVerificationStatus identificationRemarks taxonID scientificNameID acceptedNameUsageID "
        "parentNameUsageID originalNameUsageID nameAccordingToID namePublishedInID taxonConceptID scientificName "
        "acceptedNameUsage parentNameUsage originalNameUsage nameAccordingTo namePublishedIn namePublishedInYear "
        "higherClassification kingdom phylum class order family genus subgenus specificEpithet infraspecificEpithet "
        "taxonRank verbatimTaxonRank vernacularName nomenclaturalCode taxonomicStatus nomenclaturalStatus taxonRemarks"
    ),
    (
        "http://rs.gbif.org/terms/1.0/",
        "datasetKey publishingCountry lastInterpreted elevation elevationAccuracy depth depthAccuracy "
        "distanceAboveSurface distanceAboveSurfaceAccuracy issue mediaType hasCoordinate hasGeospatialIssues taxonKey "
        "acceptedTaxonKey kingdomKey phylumKey classKey orderKey familyKey genusKey subgenusKey speciesKey species "
        "genericName acceptedScientificName verbatimScientificName typifiedName protocol lastParsed lastCrawled "
        "repatriated relativeOrganismQuantity recordedByID identifiedByID"
    ),
    (
        "http://rs.gbif.org/terms/gadm/3.0/",
        "level0Gid level0Name level1Gid level1Name level2Gid level2Name level3Gid level3Name"
    ),
    (
        "http://iucn.org/terms/",
        "iucnRedListCategory"
    ),
)

MEDIA_TERMS: tuple[str, ...] = (
    "http://rs.gbif.org/terms/1.0/gbifID",
    *(f"http://purl.org/dc/terms/{name}" for name in (
        "type format identifier references title description source audience created creator contributor publisher license rightsHolder"
    ).split()),
)

_LICENSES = (
    "http://creativecommons.org/licenses/by/4.0/",
    "http://creativecommons.org/publicdomain/zero/1.0/",
    "CC BY-NC 4.0",
    "http://creativecommons.org/licenses/by-sa/4.0/",
    "",
)
_KINGDOMS = ("Plantae", "Animalia", "Fungi")
_DOI = "10.15468/dl.synth1"
_KEY = "0000001-210914110416597"
_CITATION = "Synthetic Herbarium. Occurrence dataset https://doi.org/10.15468/synth0 accessed via GBIF.org on 2021-10-14."


def core_terms() -> list[str]:
    """The real archive's 250 core terms, in its column order."""
    return [namespace + name for namespace, names in _CORE_COLUMNS for name in names.split()]


@dataclasses.dataclass(frozen=True)
class SyntheticSummary:
    path: Path
    occurrences: int
    media: int
    still_images_with_url: int  # multimedia rows of type StillImage with an identifier (all have an occurrence)
    occurrences_with_media: int
    bytes: int


def _digest(seed: int, kind: str, index: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{kind}:{index}".encode(), digest_size=8).digest(), "big")


def _file_xml(tag: str, location: str, row_type: str, terms: list[str], id_tag: str) -> str:
    id_index = terms.index("http://rs.gbif.org/terms/1.0/gbifID")
    lines = [
        f'  <{tag} encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" fieldsEnclosedBy="" ignoreHeaderLines="1" '
        f'rowType="{row_type}">',
        f"    <files>\n      <location>{location}</location>\n    </files>",
        f'    <{id_tag} index="{id_index}" />',
    ]
    if tag == "core":  # the real core declares one constant column, with no index
        lines.append('    <field default="WGS84" term="http://rs.tdwg.org/dwc/terms/geodeticDatum"/>')
    lines.extend(f'    <field index="{i}" term="{term}"/>' for i, term in enumerate(terms))
    lines.append(f"  </{tag}>")
    return "\n".join(lines) + "\n"


def meta_xml(core: list[str], media: list[str] | None) -> str:
    parts = ['<archive xmlns="http://rs.tdwg.org/dwc/text/" metadata="metadata.xml">\n']
    parts.append(_file_xml("core", "occurrence.txt", "http://rs.tdwg.org/dwc/terms/Occurrence", core, "id"))
    if media is not None:
        parts.append(_file_xml("extension", "multimedia.txt", "http://rs.gbif.org/terms/1.0/Multimedia", media, "coreid"))
    parts.append("</archive>\n")
    return "".join(parts)


def _metadata_xml(doi: str, key: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<eml:eml xmlns:eml="eml://ecoinformatics.org/eml-2.1.1" '
        f'packageId={quoteattr(doi)} system="http://gbif.org" scope="system" xml:lang="en">\n<dataset>\n'
        f"  <alternateIdentifier>{key}</alternateIdentifier>\n  <title>GBIF Occurrence Download {doi}</title>\n"
        "  <pubDate>\n  2021-10-14\n  </pubDate>\n</dataset>\n</eml:eml>\n"
    )


def _occurrence_row(seed: int, index: int, gbif_id: int, columns: dict[str, int], blank: list[str], species: int, datasets: int) -> str:
    h = _digest(seed, "occurrence", index)
    species_key = 1_000_000 + h % species
    dataset = f"00000000-0000-4000-8000-{h % datasets:012d}"
    row = blank.copy()
    values = {
        "gbifID": str(gbif_id),
        "license": ("CC_BY_4_0", "CC0_1_0", "CC_BY_NC_4_0")[h % 3],
        "basisOfRecord": "PRESERVED_SPECIMEN" if h & 1 else "HUMAN_OBSERVATION",
        "occurrenceID": f"urn:catalog:SYN:{gbif_id}",
        "catalogNumber": str(gbif_id),
        "recordedBy": "A. Collector",
        "occurrenceStatus": "PRESENT",
        "eventDate": f"{1950 + h % 70}-0{1 + h % 9}-1{h % 10}T00:00:00",
        "year": str(1950 + h % 70),
        "countryCode": ("US", "NO", "BR", "AU")[h % 4],
        "locality": 'near the "Big Rock", 2 km N',  # a literal quote, as real rows have
        "decimalLatitude": f"{(h % 18000) / 100 - 90:.2f}",
        "decimalLongitude": f"{(h % 36000) / 100 - 180:.2f}",
        "scientificName": f"Synthetica species{species_key} L.",
        "kingdom": _KINGDOMS[species_key % 3],
        "family": f"Family{species_key % 97}",
        "genus": "Synthetica",
        "taxonRank": "SPECIES",
        "taxonomicStatus": "ACCEPTED",
        "datasetKey": dataset,
        "issue": "INSTITUTION_MATCH_FUZZY",
        "mediaType": "StillImage",
        "hasCoordinate": "true",
        "taxonKey": str(species_key),
        "acceptedTaxonKey": str(species_key),
        "familyKey": str(5000 + species_key % 97),
        "speciesKey": str(species_key),
        "species": f"Synthetica species{species_key}",
        "protocol": "DWC_ARCHIVE",
    }
    for name, value in values.items():
        if name in columns:
            row[columns[name]] = value
    return "\t".join(row)


def _media_row(
    seed: int, index: int, gbif_id: int, columns: dict[str, int], sound_share: float, missing_url_share: float, media_base_url: str
) -> tuple[str, bool]:
    h = _digest(seed, "media", index)
    sound = (h % 10_000) < sound_share * 10_000
    no_url = not sound and ((h >> 16) % 10_000) < missing_url_share * 10_000
    row = [""] * len(columns)
    values = {
        "gbifID": str(gbif_id),
        "type": "Sound" if sound else "StillImage",
        "format": "audio/mpeg" if sound else "image/jpeg",
        "identifier": "" if no_url else _media_url(media_base_url, h, gbif_id, index, "mp3" if sound else "jpg"),
        "references": f"https://example.org/occurrence/{gbif_id}",
        "creator": f"Photographer {h % 1000}",
        "publisher": "Synthetic Herbarium",
        "license": _LICENSES[h % len(_LICENSES)],
        "rightsHolder": f'Holder "{h % 100}"',
    }
    for name, value in values.items():
        row[columns[name]] = value
    return "\t".join(row), not sound and not no_url


def _media_url(base: str, h: int, gbif_id: int, index: int, extension: str) -> str:
    if base:  # e.g. a local MediaServer: /media/<name>.jpg answers a real image
        return f"{base.rstrip('/')}/media/{gbif_id}-{index}.{extension}"
    # .invalid never resolves (RFC 2606): an accidental download of a synthetic archive goes nowhere.
    return f"https://media{h % 50}.synthetic.invalid/img/{gbif_id}/{index}.{extension}"


def write_synthetic_dwca(
    path: str | Path,
    *,
    occurrences: int,
    media: int,
    seed: int = 0,
    species: int = 1000,
    datasets: int = 20,
    sound_share: float = 0.05,
    missing_url_share: float = 0.01,
    shuffle_columns: bool = False,
    multimedia: bool = True,
    malformed_rows: int = 0,
    doi: str = _DOI,
    key: str = _KEY,
    compresslevel: int = 1,
    media_base_url: str = "",
) -> SyntheticSummary:
    """Writes the archive to ``path`` and returns what a correct reader must find.

    Media rows belong to occurrences chosen by hash, so some occurrences have several media and
    some none. ``shuffle_columns`` permutes both files' column order (meta.xml follows), as
    archives of different years differ. ``malformed_rows`` appends rows with too few columns to
    both files. ``multimedia=False`` leaves the extension out entirely. ``media_base_url`` (e.g.
    a local MediaServer's base URL) makes every identifier ``{base}/media/{gbifID}-{row}.jpg``;
    by default they point at hosts under ``.invalid``, which never resolve.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    core = core_terms()
    media_terms = list(MEDIA_TERMS)
    if shuffle_columns:
        shuffler = random.Random(seed)
        shuffler.shuffle(core)
        shuffler.shuffle(media_terms)
    core_names = [term.rsplit("/", 1)[-1] for term in core]  # the header row and the column of each name
    media_names = [term.rsplit("/", 1)[-1] for term in media_terms]
    core_columns = {name: i for i, name in enumerate(core_names)}
    media_columns = {name: i for i, name in enumerate(media_names)}
    blank = [""] * len(core)
    first_id = 4_000_000_000
    still_images = 0
    has_image = bytearray(max(occurrences, 1))  # one byte per occurrence, not a set of millions of ints
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel, allowZip64=True) as archive:
        archive.writestr("meta.xml", meta_xml(core, media_terms if multimedia else None))
        archive.writestr("metadata.xml", _metadata_xml(doi, key))
        archive.writestr("citations.txt", f"When using this dataset please use the following citation:\n{_CITATION}\n")
        with archive.open("occurrence.txt", "w", force_zip64=True) as out:
            _write_rows(out, "\t".join(core_names), (
                _occurrence_row(seed, i, first_id + i, core_columns, blank, species, datasets) for i in range(occurrences)
            ), malformed_rows)
        if multimedia:
            def media_rows():
                nonlocal still_images
                for j in range(media):
                    owner = _digest(seed, "owner", j) % max(occurrences, 1)
                    row, still_image = _media_row(seed, j, first_id + owner, media_columns, sound_share, missing_url_share, media_base_url)
                    if still_image:
                        still_images += 1
                        has_image[owner] = 1
                    yield row

            with archive.open("multimedia.txt", "w", force_zip64=True) as out:
                _write_rows(out, "\t".join(media_names), media_rows(), malformed_rows)
    return SyntheticSummary(path, occurrences, media if multimedia else 0, still_images, has_image.count(1), path.stat().st_size)


def _write_rows(out, header: str, rows, malformed_rows: int) -> None:
    batch = [header]
    for row in rows:
        batch.append(row)
        if len(batch) >= 5000:
            out.write(("\n".join(batch) + "\n").encode("utf-8"))
            batch = []
    batch.extend("4000000000\tmalformed" for _ in range(malformed_rows))
    if batch:
        out.write(("\n".join(batch) + "\n").encode("utf-8"))
