"""The gs:// path on a real GCS emulator (gcp-storage-emulator on 127.0.0.1): store and DownloadMedia end to end."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from beam_gbif.core.records import MediaRecord, Status
from beam_gbif.io.safety import AllowOnly
from beam_gbif.io.store import GcsStore, store_for
from beam_gbif.testing.collect import run_transform
from beam_gbif.testing.gcs_emulator import GcsEmulator
from beam_gbif.testing.media_server import MediaServer, image_bytes
from beam_gbif.transforms.download import DownloadMedia, DownloadSettings


@pytest.fixture(scope="module")
def gcs():
    with GcsEmulator(bucket="beam-gbif-test") as emulator:
        yield emulator


def test_emulator_fixture_sets_and_restores_the_environment():
    before = os.environ.get("STORAGE_EMULATOR_HOST")
    with GcsEmulator(bucket="other") as emulator:
        assert os.environ["STORAGE_EMULATOR_HOST"] == emulator.endpoint.rstrip("/")
        assert emulator.endpoint.startswith("http://127.0.0.1:")
        assert os.environ["GCE_METADATA_HOST"] == "127.0.0.1:9"
    assert os.environ.get("STORAGE_EMULATOR_HOST") == before


def test_gcs_store_operations(gcs):
    store = store_for(f"gs://{gcs.bucket}/stores")
    assert isinstance(store, GcsStore) and not store.is_local
    store.write_atomic("a/x.jpg", b"one", "image/jpeg", {"sha256": hashlib.sha256(b"one").hexdigest()})
    store.write_atomic("a/y.jpg", b"two")
    store.write_atomic("top.txt", b"three")
    assert store.read("a/y.jpg") == b"two"
    assert store.list() == ["a/x.jpg", "a/y.jpg", "top.txt"]
    assert store.list("a") == ["a/x.jpg", "a/y.jpg"]
    assert store.list_dir("a") == ["x.jpg", "y.jpg"] and store.list_dir("a", startswith="y") == ["y.jpg"]
    assert store.list_dir("") == ["top.txt"]
    assert store.describe("a/x.jpg") == (3, hashlib.sha256(b"one").hexdigest())
    assert store.describe("a/y.jpg") == (3, hashlib.sha256(b"two").hexdigest())  # no metadata: hashed
    store.delete("a/y.jpg")
    store.delete("a/y.jpg")
    assert store.list("a") == ["a/x.jpg"]
    assert store.uri("a/x.jpg") == f"gs://{gcs.bucket}/stores/a/x.jpg"


def run(records, transform, tmp_path):
    return run_transform(transform, tmp_path, records=records)


@pytest.mark.timeout(120)
def test_download_to_gcs_end_to_end_and_rerun(gcs, tmp_path):
    root = f"gs://{gcs.bucket}/dataset"
    with MediaServer() as media:
        records = [MediaRecord(url=media.url(f"g{i}"), label=f"sp{i % 2}", occurrence_key=i, split="train") for i in range(12)]
        records.append(MediaRecord(url=media.fault_url("status/404/gone.jpg"), label="sp0", occurrence_key=99))
        records.append(MediaRecord(url=media.fault_url("html/page.jpg"), label="sp0", occurrence_key=98))
        policy = AllowOnly(["127.0.0.1"])
        results, counters = run(records, DownloadMedia(DownloadSettings(root, address_policy=policy, max_retries=0)), tmp_path)
        assert counters["media_downloaded"] == 12 and counters["media_failed"] == 2
        store = store_for(root)
        downloaded = sorted(r.path for r in results if r.status == Status.DOWNLOADED)
        assert store.list() == downloaded, "only whole objects, nothing for the failures"
        for r in results:
            if r.status == Status.DOWNLOADED:
                name = r.url.rsplit("/", 1)[1][:-4]
                assert r.path == f"train/{r.label_dir}/{r.basename}.jpg"
                assert store.read(r.path) == image_bytes(name)
                assert r.sha256 == hashlib.sha256(image_bytes(name)).hexdigest()
        media.reset_hits()
        again, counters = run(records, DownloadMedia(DownloadSettings(root, address_policy=policy, max_retries=0)), tmp_path)
        assert counters["media_skipped_existing"] == 12 and "media_downloaded" not in counters
        assert set(media.hits) == {"/status/404/gone.jpg", "/html/page.jpg"}
        first = {r.url: r for r in results}
        for r in again:
            if r.status == Status.SKIPPED_EXISTING:
                assert (r.path, r.bytes, r.sha256) == (first[r.url].path, first[r.url].bytes, first[r.url].sha256)


@pytest.mark.timeout(60)
def test_beams_gcs_filesystem_uses_the_emulator_without_a_credential_search(gcs):
    from apache_beam.io.filesystems import FileSystems

    started = time.monotonic()
    with FileSystems.create(f"gs://{gcs.bucket}/beamio/hello.txt") as handle:
        handle.write(b"hello")
    assert FileSystems.open(f"gs://{gcs.bucket}/beamio/hello.txt").read() == b"hello"
    assert [m.path for m in FileSystems.match([f"gs://{gcs.bucket}/beamio/*"])[0].metadata_list] == [f"gs://{gcs.bucket}/beamio/hello.txt"]
    assert store_for(f"gs://{gcs.bucket}/beamio").read("hello.txt") == b"hello", "same objects as google-cloud-storage sees"
    assert time.monotonic() - started < 10, "Beam would otherwise retry google.auth.default() for ~30-40 s"


@pytest.mark.parametrize("metadata", [True, False], ids=["sha256-metadata", "no-metadata"])
def test_create_only_write_onto_an_existing_object_records_that_objects_checksum(gcs, metadata):
    # Another attempt (a retried bundle, a zombie worker) created the object between our lookup and our upload.
    from beam_gbif.io.fetch import FetchEngine

    root = f"gs://{gcs.bucket}/race-{metadata}"
    store = store_for(root)
    theirs, ours = image_bytes("theirs"), image_bytes("ours")
    assert store.write_atomic("sp/x.jpg", theirs, "image/jpeg", {"sha256": hashlib.sha256(theirs).hexdigest()} if metadata else None)
    assert store.write_atomic("sp/x.jpg", ours, "image/jpeg") is False, "create-only: the existing object is kept"
    assert store.read("sp/x.jpg") == theirs
    engine = FetchEngine(DownloadSettings(root), AllowOnly(["127.0.0.1"]), store, executor=None)
    assert engine.write("sp/x.jpg", ours, "image/jpeg") == (len(theirs), hashlib.sha256(theirs).hexdigest())
    assert engine.write("sp/new.jpg", ours, "image/jpeg") == (len(ours), hashlib.sha256(ours).hexdigest())
