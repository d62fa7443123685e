"""``--extra_fields``: occurrence fields carried into every record, the manifest and each format's metadata, from the
API (its JSON fields, checked before any request) and from a DwC-A (terms by short name or URI)."""

from __future__ import annotations

import json
import tarfile
import zipfile

import pytest

from beam_gbif.io.manifest_files import read_manifest
from beam_gbif.testing.fake_gbif import FakeGbifApi
from beam_gbif.testing.synthetic import SyntheticOccurrences
from beam_gbif.testing.synthetic_dwca import write_synthetic_dwca
from pipelines.gbif_media import run

SPECIES = [5352251, 3190653]
# family is a field of occurrence records but no search parameter; vernacularName is a field these records lack.
API_FIELDS = ["scientificName", "kingdom", "family", "species", "vernacularName"]


@pytest.fixture(scope="module")
def api(media):
    with FakeGbifApi(SyntheticOccurrences(SPECIES, ["ds-a"], per_stream=6, media_base_url=media.base_url, seed=3)) as server:
        yield server


def _api_argv(api: FakeGbifApi, output, *extra: str) -> list[str]:
    return [f"--gbif_api_url={api.base_url}", f"--query={json.dumps({'speciesKey': SPECIES})}", "--label=speciesKey",
            f"--output={output}", "--allow_private_hosts", "--runner=FnApiRunner", *extra]


def test_api_fields_reach_the_manifest_and_the_webdataset_json(api, tmp_path):
    output = tmp_path / "ds"
    assert run(_api_argv(api, output, "--output_format=webdataset", f"--extra_fields={','.join(API_FIELDS)}")) == 0
    occurrences = {o["key"]: o for o in (api.store.occurrence(i) for i in range(len(api.store)))}
    rows = read_manifest(str(output))
    assert rows
    for row in rows:
        occurrence = occurrences[row.occurrence_key]
        expected = {name: str(occurrence.get(name, "")) for name in API_FIELDS}
        assert dict(row.extra) == expected and expected["family"] and expected["vernacularName"] == ""
    stored = {}
    for shard in output.rglob("*.tar"):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())
                    stored[meta["key"]] = {name: meta[name] for name in API_FIELDS}
    assert stored == {row.key: dict(row.extra) for row in rows}
    assert "None" not in {value for values in stored.values() for value in values.values()}


@pytest.mark.parametrize("field", ["famly", "notAField"])
def test_an_unknown_api_field_is_one_clear_error_before_any_request(api, media, tmp_path, capsys, field):
    api.clear_requests()
    media.reset_hits()
    output = tmp_path / "ds"
    assert run(_api_argv(api, output, f"--extra_fields=family,{field}")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--extra_fields: {field!r} is not a field of GBIF occurrence records" in err[0]
    assert ("did you mean family" in err[0]) == (field == "famly")
    assert api.requests == [] and media.total_hits == 0 and not output.exists()


@pytest.mark.usefixtures("fresh_dwca_memo")
def test_dwca_terms_by_uri_and_short_name_reach_every_record(media, tmp_path):
    from tfrecord.reader import tfrecord_loader

    summary = write_synthetic_dwca(tmp_path / "archive.zip", occurrences=40, media=60, species=3, datasets=2,
                                   media_base_url=media.base_url)
    output = tmp_path / "ds"
    fields = "http://rs.tdwg.org/dwc/terms/family,countryCode,vernacularName"
    assert run([f"--dwca={summary.path}", f"--dwca_root_path={tmp_path / 'cache'}", "--label=speciesKey", "--nb_samples=8",
                "--output_format=tfrecord", f"--extra_fields={fields}", f"--output={output}", "--allow_private_hosts",
                "--runner=FnApiRunner"]) == 0
    with zipfile.ZipFile(summary.path) as archive:
        lines = archive.read("occurrence.txt").decode().splitlines()
    header = lines[0].split("\t")
    by_id = {int(cells[header.index("gbifID")]): cells for cells in (line.split("\t") for line in lines[1:])}
    rows = {row.key: row for row in read_manifest(str(output))}
    assert len(rows) == 8
    for row in rows.values():
        cells = by_id[row.occurrence_key]
        assert dict(row.extra) == {"family": cells[header.index("family")], "countryCode": cells[header.index("countryCode")],
                                   "vernacularName": ""}
    description = {"gbif/key": "byte", "gbif/family": "byte", "gbif/countryCode": "byte"}
    seen = {}
    for shard in output.rglob("*.tfrecord"):
        for example in tfrecord_loader(str(shard), None, description):
            text = {name: bytes(value).decode() for name, value in example.items()}
            seen[text["gbif/key"]] = (text["gbif/family"], text["gbif/countryCode"])
    assert seen == {key: (dict(row.extra)["family"], dict(row.extra)["countryCode"]) for key, row in rows.items()}
