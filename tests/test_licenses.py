"""Licence normalisation over every licence string in the real GBIF data, plus the documented forms."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from beam_gbif.core.licenses import KNOWN_LICENSE_CODES, normalize_license

# Every licence text found in ../shared/data, with the code it must get. The test below
# extracts the strings from the files and fails if one is missing here (so new data is
# classified on purpose) or classified differently.
REAL_DATA_LICENSES = {
    # API pages: media[].license and the occurrence's license
    "All rights reserved": "ALL_RIGHTS_RESERVED",
    "http://creativecommons.org/licenses/by-nc-nd/4.0/": "CC_BY_NC_ND_4_0",
    "http://creativecommons.org/licenses/by-nc/4.0/": "CC_BY_NC_4_0",
    "http://creativecommons.org/licenses/by/4.0/": "CC_BY_4_0",
    "http://creativecommons.org/publicdomain/zero/1.0/": "CC0_1_0",
    "http://creativecommons.org/licenses/by-nc/4.0/legalcode": "CC_BY_NC_4_0",
    "http://creativecommons.org/licenses/by/4.0/legalcode": "CC_BY_4_0",
    "http://creativecommons.org/publicdomain/zero/1.0/legalcode": "CC0_1_0",
    # DwC-A multimedia.txt license
    "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/legalcode#languages)": "CC_BY_4_0",
    "http://creativecommons.org/licenses/by-nd/4.0/": "CC_BY_ND_4_0",
    "http://creativecommons.org/licenses/by-sa/4.0/": "CC_BY_SA_4_0",
    # Harvard's documented policy: no copyright asserted over reproductions of public-domain works.
    "https://huh.harvard.edu/access-digital-reproductions-works-public-domain": "PUBLIC_DOMAIN",
    # DwC-A occurrence.txt license (GBIF's interpreted codes) and rights
    "CC0_1_0": "CC0_1_0",
    "CC_BY_4_0": "CC_BY_4_0",
    "CC_BY_NC_4_0": "CC_BY_NC_4_0",
    "http://creativecommons.org/licenses/by-nc/3.0/": "CC_BY_NC_3_0",
    "http://creativecommons.org/licenses/by/3.0/": "CC_BY_3_0",
    # DwC-A verbatim.txt license (the publishers' own text)
    "CC-BY 4.0 (Int)": "CC_BY_4_0",
    "CC-BY": "CC_BY",  # names the licence but no version
    "Creative Commons Attribution Non Commercial (CC-BY-NC) 4.0 License.": "CC_BY_NC_4_0",
    "http://creativecommons.org/licenses/by/3.0/nz/": "CC_BY_3_0",  # ported licence → its generic version
    "http://creativecommons.org/licenses/by/4.0/deed.en_US": "CC_BY_4_0",
    # Truly unknown: no licence given, or a link to a general terms-of-use page that grants no licence.
    "": "UNKNOWN",
    "https://huh.harvard.edu/pages/use": "UNKNOWN",
}
TRULY_UNKNOWN = {"", "https://huh.harvard.edu/pages/use"}

API_PAGES = (
    "gbif-api/occurrence_search_taxonKey_3329049_offset_0.json",
    "gbif-api/occurrence_search_taxonKey_2431762_offset_0.json",
    "gbif-api/occurrence_142316497.json",
)
DWCA = "dwca/0026367-210914110416597.zip"
# Licence-bearing columns of the archive's text files.
DWCA_COLUMNS = {"multimedia.txt": ("license",), "occurrence.txt": ("license", "rights"), "verbatim.txt": ("license", "rights")}


def _api_licenses(shared_data: Path) -> set[str]:
    found: set[str] = set()
    for name in API_PAGES:
        page = json.loads((shared_data / name).read_text(encoding="utf-8"))
        for occurrence in page.get("results", [page]):
            found.add((occurrence.get("license") or "").strip())
            found.update((media.get("license") or "").strip() for media in occurrence.get("media", []))
    return found


def _dwca_licenses(shared_data: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    with zipfile.ZipFile(shared_data / DWCA) as archive:
        for member, columns in DWCA_COLUMNS.items():
            with archive.open(member) as raw:
                lines = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
                header = next(lines).rstrip("\n").split("\t")
                indexes = [header.index(column) for column in columns]
                values = found.setdefault(member, set())
                for line in lines:
                    cells = line.rstrip("\n").split("\t")
                    values.update(cells[i].strip() for i in indexes if i < len(cells))
    return found


def test_every_real_licence_string_has_its_expected_code(shared_data: Path) -> None:
    dwca = _dwca_licenses(shared_data)
    seen = _api_licenses(shared_data) | set().union(*dwca.values())
    assert seen == set(REAL_DATA_LICENSES), "licence strings in the data changed; classify the new ones"
    got = {raw: normalize_license(raw) for raw in seen}
    assert got == {raw: REAL_DATA_LICENSES[raw] for raw in seen}
    assert {raw for raw, code in got.items() if code == "UNKNOWN"} == TRULY_UNKNOWN


def test_the_archive_columns_the_brief_names_are_all_classified(shared_data: Path) -> None:
    dwca = _dwca_licenses(shared_data)
    # The media licences of the archive: everything but the empty cells gets a real code.
    assert len(dwca["multimedia.txt"]) >= 8
    for raw in dwca["multimedia.txt"] | dwca["occurrence.txt"]:
        assert (normalize_license(raw) == "UNKNOWN") == (raw in TRULY_UNKNOWN), raw


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("CC BY 4.0", "CC_BY_4_0"),
        ("https://creativecommons.org/licenses/by/4.0/", "CC_BY_4_0"),
        ("https://creativecommons.org/licenses/by/4.0", "CC_BY_4_0"),
        ("HTTPS://CreativeCommons.org/licenses/BY-SA/4.0/legalcode.de", "CC_BY_SA_4_0"),
        ("http://creativecommons.org/licenses/by-nc-sa/2.0/deed.fr", "CC_BY_NC_SA_2_0"),
        ("https://creativecommons.org/licenses/by-nc-nd/3.0/igo/", "CC_BY_NC_ND_3_0"),
        ("http://creativecommons.org/licenses/by/2.5/", "CC_BY_2_5"),
        ("https://creativecommons.org/publicdomain/mark/1.0/", "PUBLIC_DOMAIN"),
        ("CC0", "CC0_1_0"),
        ("cc0 1.0 universal", "CC0_1_0"),
        ("CC0 Public Domain Dedication", "CC0_1_0"),
        ("Public Domain Mark 1.0", "PUBLIC_DOMAIN"),
        ("public domain", "PUBLIC_DOMAIN"),
        ("PDM", "PUBLIC_DOMAIN"),
        ("All rights reserved", "ALL_RIGHTS_RESERVED"),
        ("© Jane Doe", "ALL_RIGHTS_RESERVED"),
        ("(c) Jane Doe 2019", "ALL_RIGHTS_RESERVED"),
        ("http://rightsstatements.org/vocab/InC/1.0/", "ALL_RIGHTS_RESERVED"),
        ("CC BY-NC 4.0", "CC_BY_NC_4_0"),
        ("cc-by-nc-sa-4.0", "CC_BY_NC_SA_4_0"),
        ("CC BY-SA 2.5", "CC_BY_SA_2_5"),
        ("CC-BY-NC v3", "CC_BY_NC_3_0"),
        ("Attribution-NonCommercial-ShareAlike 4.0 International", "CC_BY_NC_SA_4_0"),
        ("Creative Commons Attribution-NoDerivatives 4.0", "CC_BY_ND_4_0"),
        ("Creative Commons Attribution Share Alike 3.0", "CC_BY_SA_3_0"),
        ("cc_by_nc_4_0", "CC_BY_NC_4_0"),
        ("CC BY-NC-SA", "CC_BY_NC_SA"),
        # Not licences, or not real ones: UNKNOWN, so a --licenses filter excludes them.
        ("", "UNKNOWN"),
        ("   ", "UNKNOWN"),
        ("CC BY 5.0", "UNKNOWN"),
        ("CC BY-SA-ND 4.0", "UNKNOWN"),
        ("http://creativecommons.org/licenses/sa/1.0/", "UNKNOWN"),
        ("Universidad Nacional de Colombia", "UNKNOWN"),
        ("by-nc", "UNKNOWN"),
        ("see website", "UNKNOWN"),
    ],
)
def test_documented_forms(raw: str, code: str) -> None:
    assert normalize_license(raw) == code


def test_every_code_returned_is_known_and_codes_are_their_own_normal_form() -> None:
    assert {"CC0_1_0", "CC_BY_4_0", "CC_BY_NC_4_0", "CC_BY_SA_4_0", "CC_BY_NC_SA_4_0", "CC_BY_ND_4_0", "CC_BY_NC_ND_4_0",
            "CC_BY_3_0", "PUBLIC_DOMAIN", "ALL_RIGHTS_RESERVED", "UNKNOWN"} <= KNOWN_LICENSE_CODES
    for code in KNOWN_LICENSE_CODES:
        assert normalize_license(code) == code
    for raw in REAL_DATA_LICENSES:
        assert normalize_license(raw) in KNOWN_LICENSE_CODES


def test_licenses_option_end_to_end(tmp_path: Path) -> None:
    """--licenses filters before sampling: every stream still gets its full quota of usable images."""
    from beam_gbif.testing.fake_gbif import FakeGbifApi
    from beam_gbif.testing.media_server import MediaServer
    from beam_gbif.testing.synthetic import SyntheticOccurrences
    from beam_gbif.transforms.manifest import read_manifest
    from pipelines.gbif_media import run

    species, datasets = [5352251, 3190653], ["7a3679ef-5582-4aaa-81f0-8c2545cafc81", "50c9509d-22c7-4a22-a47d-8c48425ef4a7"]
    with MediaServer() as media:
        store = SyntheticOccurrences(species, datasets, per_stream=15, media_base_url=media.base_url, seed=3)
        with FakeGbifApi(store) as api:
            common = [f"--gbif_api_url={api.base_url}", '--query={"speciesKey": [5352251, 3190653]}', "--label=speciesKey",
                      "--split_streams_by=speciesKey,datasetKey", "--nb_samples_per_stream=4", "--allow_private_hosts",
                      "--runner=FnApiRunner"]
            assert run([*common, f"--output={tmp_path / 'all'}"]) == 0
            assert run([*common, f"--output={tmp_path / 'open'}", "--licenses=CC0_1_0,CC_BY_4_0"]) == 0
    everything = read_manifest(str(tmp_path / "all"))
    assert {r.license_code for r in everything} - {"CC0_1_0", "CC_BY_4_0"}, "the data must hold other licences for this test"
    kept = read_manifest(str(tmp_path / "open"))
    assert {r.license_code for r in kept} <= {"CC0_1_0", "CC_BY_4_0"}
    for record in kept:  # the raw text stays on the record, next to its code
        assert record.license and normalize_license(record.license) == record.license_code
    per_stream: dict[tuple[str, ...], int] = {}
    for record in kept:
        per_stream[record.stream] = per_stream.get(record.stream, 0) + 1
    assert per_stream == {(str(s), d): 4 for s in species for d in datasets}
