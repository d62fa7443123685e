"""--dwca_root_path on gs:// (the GCS emulator): download, cache reuse, extraction and a pipeline that reads from GCS."""

from __future__ import annotations

import json
import zipfile

import apache_beam as beam
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_gbif.core.records import MediaRecord
from beam_gbif.io.dwca.archive import forget_prepared_archives, prepare_archive
from beam_gbif.testing.fake_downloads import DownloadFaults, FakeDownload, download_routes
from beam_gbif.testing.fake_gbif import FakeGbifApi
from beam_gbif.testing.gcs_emulator import GcsEmulator
from beam_gbif.transforms.sources.dwca import DwcaReadSettings, ReadDwcaMedia
from tests.conftest import REAL_DWCA_DOI as DOI
from tests.conftest import REAL_DWCA_KEY as KEY

pytestmark = pytest.mark.usefixtures("fresh_dwca_memo")


@pytest.fixture(scope="module")
def gcs():
    """The GCS emulator (which also makes Beam's GCS filesystem anonymous while it runs)."""
    with GcsEmulator(bucket="dwca-cache") as emulator:
        yield emulator


def _read_all(uri: str) -> bytes:
    with FileSystems.open(uri) as handle:
        return handle.read()


def test_download_cache_and_pipeline_on_gcs(gcs, real_zip, tmp_path):
    root = f"gs://{gcs.bucket}/cache"
    faults = DownloadFaults()
    with FakeGbifApi(extra_routes=[download_routes([FakeDownload(key=KEY, doi=DOI, archive=real_zip)], faults)]) as api:
        prepared = prepare_archive(DOI, cache_root=root, api_url=api.base_url)
        assert prepared.archive.zip_uri == f"{root}/{KEY}.zip"
        assert _read_all(prepared.archive.zip_uri) == real_zip.read_bytes()
        assert prepared.multimedia_uri == f"{root}/{KEY}/multimedia.txt"
        assert _read_all(prepared.multimedia_uri) == zipfile.ZipFile(real_zip).read("multimedia.txt")
        assert not [m for m in FileSystems.match([f"{root}/**"])[0].metadata_list if ".partial-" in m.path]

        forget_prepared_archives()
        pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
        (
            pipeline
            | ReadDwcaMedia(DwcaReadSettings(KEY, cache_root=root, api_url=api.base_url, label_field="speciesKey"))
            | beam.Map(lambda record: json.dumps(record.to_dict()))
            | beam.io.WriteToText(str(tmp_path / "records"), file_name_suffix=".jsonl")
        )
        pipeline.run().wait_until_finish()
    assert faults.requests["zip"] == 1  # the second resolution reused the archive cached on GCS
    records = [MediaRecord.from_dict(json.loads(line)) for path in tmp_path.glob("records*.jsonl") for line in path.open()]
    assert len(records) == 475 and {r.source for r in records} == {f"dwca:{DOI}"}


def test_gcs_zip_is_used_directly(gcs, real_zip):
    uri = f"gs://{gcs.bucket}/mine/archive.zip"
    with FileSystems.create(uri) as out:
        out.write(real_zip.read_bytes())
    prepared = prepare_archive(uri, cache_root=f"gs://{gcs.bucket}/cache2", api_url="http://127.0.0.1:9/v1")
    assert prepared.archive.zip_uri == uri and prepared.archive.doi == DOI
    assert prepared.core_uri.startswith(f"gs://{gcs.bucket}/cache2/archive-")
