"""Resolving --dwca (DOI, key, path) against the fake GBIF download API; the cache; bad archives."""

from __future__ import annotations

import io
import os
import shutil
import stat
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from beam_gbif import DEFAULT_USER_AGENT
from beam_gbif.core.errors import OptionError
from beam_gbif.io.dwca import zip_checks
from beam_gbif.io.dwca.archive import citation_of, forget_prepared_archives, prepare_archive
from beam_gbif.io.dwca.meta import DwcaError
from beam_gbif.io.dwca.request import parse_predicate
from beam_gbif.io.dwca.resolve import classify_spec, resolve_archive
from beam_gbif.io.dwca.zip_checks import MAX_MEMBERS, RATIO_CHECKED_FROM_BYTES
from beam_gbif.io.gbif.client import GbifClient
from beam_gbif.testing.fake_downloads import SERVER_ERROR, TRUNCATE, DownloadFaults, FakeDownload, download_routes
from beam_gbif.testing.fake_gbif import FakeGbifApi
from beam_gbif.testing.synthetic_dwca import write_synthetic_dwca
from beam_gbif.transforms.sources.dwca import DwcaReadSettings, ReadDwcaMedia
from beam_gbif.transforms.sources.dwca import prepare as prepare_source
from tests.conftest import REAL_DWCA_DOI as DOI
from tests.conftest import REAL_DWCA_KEY as KEY

pytestmark = pytest.mark.usefixtures("fresh_dwca_memo")


@pytest.fixture()
def gbif(real_zip):
    downloads = [
        FakeDownload(key=KEY, doi=DOI, archive=real_zip, total_records=963),
        FakeDownload(key="0000002-210914110416597", doi="10.15468/dl.running", archive=b"", status="RUNNING"),
        FakeDownload(key="0000003-210914110416597", doi="10.15468/dl.csv0001", archive=real_zip, format="SIMPLE_CSV"),
    ]
    faults = DownloadFaults()
    with FakeGbifApi(extra_routes=[download_routes(downloads, faults)]) as api:
        yield SimpleNamespace(api_url=api.base_url, faults=faults)


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("spec", "kind", "value"),
    [
        ("10.15468/dl.jd3hup", "doi", "10.15468/dl.jd3hup"),
        ("https://doi.org/10.15468/dl.jd3hup", "doi", "10.15468/dl.jd3hup"),
        ("doi:10.15468/dl.jd3hup", "doi", "10.15468/dl.jd3hup"),
        (" 0117522-200613084148143 ", "key", "0117522-200613084148143"),
        ("gs://bucket/a.zip", "path", "gs://bucket/a.zip"),
    ],
)
def test_spec_is_classified(spec, kind, value):
    assert classify_spec(spec) == (kind, value)


@pytest.mark.parametrize("spec", [DOI, KEY])
def test_doi_and_key_resolve_and_download_into_the_cache(gbif, tmp_path, spec):
    resolved = resolve_archive(spec, cache_root=str(tmp_path), api_url=gbif.api_url)
    assert (resolved.key, resolved.doi, resolved.downloaded) == (KEY, DOI, True)
    assert Path(resolved.zip_uri) == tmp_path / f"{KEY}.zip"
    assert (tmp_path / f"{KEY}.zip").stat().st_size == resolved.metadata["size"]
    assert gbif.faults.requests == {"metadata": 1, "zip": 1}
    assert set(gbif.faults.user_agents) == {DEFAULT_USER_AGENT}
    assert resolved.source == f"dwca:{DOI}"


def test_cache_is_reused_without_a_second_download(gbif, tmp_path):
    first = prepare_archive(DOI, cache_root=str(tmp_path), api_url=gbif.api_url)
    forget_prepared_archives()
    second = prepare_archive(KEY, cache_root=str(tmp_path), api_url=gbif.api_url)
    assert gbif.faults.requests["zip"] == 1
    assert second.core_uri == first.core_uri and second.archive.downloaded is False


def test_truncated_cache_is_fetched_again(gbif, tmp_path, real_zip):
    (tmp_path / f"{KEY}.zip").write_bytes(real_zip.read_bytes()[:1000])
    resolved = resolve_archive(KEY, cache_root=str(tmp_path), api_url=gbif.api_url)
    assert resolved.downloaded and gbif.faults.requests["zip"] == 1
    assert (tmp_path / f"{KEY}.zip").read_bytes() == real_zip.read_bytes()


def test_corrupt_cache_of_the_right_size_is_fetched_again(gbif, tmp_path, real_zip):
    # Same size as GBIF says, but the multimedia member's bytes are damaged: its CRC fails on
    # extraction, so the archive is fetched again and extraction succeeds.
    data = bytearray(real_zip.read_bytes())
    with zipfile.ZipFile(real_zip) as archive:
        info = archive.getinfo("multimedia.txt")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 100
    data[start:start + 64] = bytes(64)
    (tmp_path / f"{KEY}.zip").write_bytes(bytes(data))
    prepared = prepare_archive(KEY, cache_root=str(tmp_path), api_url=gbif.api_url)
    assert gbif.faults.requests["zip"] == 1
    assert Path(prepared.multimedia_uri).read_bytes() == zipfile.ZipFile(real_zip).read("multimedia.txt")


def test_truncated_transfer_and_server_error_are_retried(gbif, tmp_path):
    gbif.faults.zip_faults.extend([TRUNCATE, SERVER_ERROR])
    resolved = resolve_archive(DOI, cache_root=str(tmp_path), api_url=gbif.api_url)
    assert gbif.faults.requests["zip"] == 3
    assert zipfile.ZipFile(resolved.zip_uri).testzip() is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial")]


def test_download_that_keeps_failing_is_a_clear_error_and_leaves_no_file(gbif, tmp_path):
    client = GbifClient(gbif.api_url, max_retries=2, sleep=lambda seconds: None)
    gbif.faults.zip_faults.extend([TRUNCATE] * 3)
    with pytest.raises(DwcaError, match="could not download the archive .*after 3 attempt"):
        resolve_archive(KEY, cache_root=str(tmp_path), client=client)
    assert gbif.faults.requests["zip"] == 3
    assert list(tmp_path.iterdir()) == []


def test_status_other_than_succeeded_is_a_clear_error(gbif, tmp_path):
    with pytest.raises(DwcaError, match="has status RUNNING, not SUCCEEDED"):
        resolve_archive("10.15468/dl.running", cache_root=str(tmp_path), api_url=gbif.api_url)
    assert gbif.faults.requests["zip"] == 0


def test_download_in_another_format_is_a_clear_error(gbif, tmp_path):
    with pytest.raises(DwcaError, match="format SIMPLE_CSV, not DWCA"):
        resolve_archive("10.15468/dl.csv0001", cache_root=str(tmp_path), api_url=gbif.api_url)


def test_unknown_download_is_a_clear_error(gbif, tmp_path):
    with pytest.raises(DwcaError, match="GBIF knows no download '9999999-210914110416597'"):
        resolve_archive("9999999-210914110416597", cache_root=str(tmp_path), api_url=gbif.api_url)


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(DwcaError, match="no such file, and not a GBIF download DOI"):
        resolve_archive(str(tmp_path / "nope.zip"), cache_root=str(tmp_path), api_url="http://127.0.0.1:9/v1")


def test_local_zip_is_used_directly_and_cited_from_its_metadata(real_zip, tmp_path):
    prepared = prepare_archive(str(real_zip), cache_root=str(tmp_path), api_url="http://127.0.0.1:9/v1")
    assert prepared.archive.zip_uri == str(real_zip)
    assert Path(prepared.folder).parent == tmp_path
    citation = citation_of(prepared)
    assert citation["doi"] == DOI and citation["key"] == KEY
    assert citation["citation"] == "GBIF.org (14 October 2021) GBIF Occurrence Download https://doi.org/10.15468/dl.jd3hup"
    assert citation["datasets"] == 39
    assert Path(citation["citations_uri"]).read_text(encoding="utf-8").startswith("When using this dataset")


def test_citation_of_a_resolved_download_uses_gbif_metadata(gbif, tmp_path):
    citation = citation_of(prepare_archive(DOI, cache_root=str(tmp_path), api_url=gbif.api_url))
    assert citation["source"] == f"dwca:{DOI}"
    assert citation["total_records"] == 963
    assert citation["license"].startswith("http://creativecommons.org/licenses/by-nc/4.0")


def test_extracted_files_are_reused_and_refreshed_when_the_zip_changes(tmp_path):
    archive = tmp_path / "in" / "a.zip"
    cache = tmp_path / "cache"
    write_synthetic_dwca(archive, occurrences=20, media=30, seed=1)
    first = Path(prepare_archive(str(archive), cache_root=str(cache), api_url="http://127.0.0.1:9/v1").multimedia_uri)
    before = first.stat().st_mtime_ns
    forget_prepared_archives()
    prepare_archive(str(archive), cache_root=str(cache), api_url="http://127.0.0.1:9/v1")
    assert first.stat().st_mtime_ns == before
    forget_prepared_archives()
    write_synthetic_dwca(archive, occurrences=20, media=31, seed=2)
    second = Path(prepare_archive(str(archive), cache_root=str(cache), api_url="http://127.0.0.1:9/v1").multimedia_uri)
    assert second == first and second.read_bytes() == zipfile.ZipFile(archive).read("multimedia.txt")


# ----------------------------------------------------------------------------- bad archives


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    path.write_bytes(buffer.getvalue())
    return path


def test_not_a_zip_is_a_clear_error(tmp_path):
    path = tmp_path / "archive.zip"
    path.write_text("<html>Not Found</html>")
    with pytest.raises(DwcaError, match="is not a zip file"):
        prepare_archive(str(path), cache_root=str(tmp_path / "cache"), api_url="http://127.0.0.1:9/v1")


def test_zip_without_meta_xml_is_a_clear_error(tmp_path):
    path = _zip(tmp_path / "archive.zip", {"occurrence.txt": b"gbifID\n1\n"})
    with pytest.raises(DwcaError, match="has no meta.xml"):
        prepare_archive(str(path), cache_root=str(tmp_path / "cache"), api_url="http://127.0.0.1:9/v1")


def test_archive_without_multimedia_extension_is_a_clear_error(tmp_path):
    path = write_synthetic_dwca(tmp_path / "plain.zip", occurrences=5, media=0, multimedia=False).path
    with pytest.raises(DwcaError, match=r"plain.zip has no multimedia extension \(rowType http://rs.gbif.org/terms/1.0/Multimedia\)"):
        prepare_archive(str(path), cache_root=str(tmp_path / "cache"), api_url="http://127.0.0.1:9/v1")


@pytest.mark.parametrize("evil", ["../escaped.txt", "../../escaped.txt", "/tmp/escaped.txt", "sub/../../escaped.txt"])
def test_path_traversal_member_is_refused_and_nothing_is_written_outside_the_cache(tmp_path, evil):
    source = tmp_path / "src"
    source.mkdir()
    synthetic = write_synthetic_dwca(source / "ok.zip", occurrences=5, media=5).path
    with zipfile.ZipFile(synthetic) as good:
        members = {name: good.read(name) for name in good.namelist()}
    meta = members["meta.xml"].replace(b"<location>multimedia.txt</location>", f"<location>{evil}</location>".encode())
    path = _zip(source / "evil.zip", {**members, "meta.xml": meta, evil: members["multimedia.txt"]})
    cache = tmp_path / "deep" / "cache"
    before = _files_under(tmp_path)
    with pytest.raises(DwcaError, match="unsafe file name"):
        prepare_archive(str(path), cache_root=str(cache), api_url="http://127.0.0.1:9/v1")
    assert _files_under(tmp_path) == before
    assert not os.path.exists("/tmp/escaped.txt")


def test_traversal_member_not_named_by_meta_xml_still_refuses_the_archive(tmp_path):
    synthetic = write_synthetic_dwca(tmp_path / "ok.zip", occurrences=5, media=5).path
    with zipfile.ZipFile(synthetic) as good:
        members = {name: good.read(name) for name in good.namelist()}
    path = _zip(tmp_path / "evil.zip", {**members, "../../x": b"boom"})
    with pytest.raises(DwcaError, match=r"refusing the archive, unsafe file name in archive: '../../x'"):
        prepare_archive(str(path), cache_root=str(tmp_path / "cache"), api_url="http://127.0.0.1:9/v1")
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()


def _synthetic_plus(tmp_path: Path, extra: list[tuple[zipfile.ZipInfo, bytes]]) -> Path:
    """A valid synthetic DwC-A, every member deflated, with ``extra`` members appended as given."""
    synthetic = write_synthetic_dwca(tmp_path / "src" / "ok.zip", occurrences=5, media=5).path
    path = tmp_path / "src" / "odd.zip"
    with zipfile.ZipFile(synthetic) as good, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as odd:
        for name in good.namelist():
            odd.writestr(name, good.read(name))
        for info, data in extra:
            odd.writestr(info, data)
    return path


def _prepare_refused(path: Path, cache: Path, message: str) -> None:
    """prepare_archive raises DwcaError matching ``message`` and has extracted nothing."""
    with pytest.raises(DwcaError, match=message):
        prepare_archive(str(path), cache_root=str(cache), api_url="http://127.0.0.1:9/v1")
    assert not cache.exists() or not _files_under(cache)


def _symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix: the mode lives in the high 16 bits
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("member", ["link.txt", "dataset/linked.xml"])
def test_archive_with_a_symlink_member_is_refused_as_a_whole(tmp_path, member):
    path = _synthetic_plus(tmp_path, [(_symlink(member), b"/etc/passwd")])
    _prepare_refused(path, tmp_path / "cache", f"odd.zip: refusing the archive, member '{member}' is a symbolic link")


def test_member_that_inflates_more_than_200_to_1_is_refused_before_extraction(tmp_path):
    bomb = zipfile.ZipInfo("verbatim.txt")
    bomb.compress_type = zipfile.ZIP_DEFLATED
    path = _synthetic_plus(tmp_path, [(bomb, bytes(10 << 20))])  # 10 MiB of zeros deflate about 1000:1
    _prepare_refused(path, tmp_path / "cache", r"member 'verbatim.txt' would inflate \d+ bytes to 10485760 \(\d+:1, more than 200:1\)")


def test_small_members_and_ratios_up_to_the_limit_are_accepted(tmp_path):
    dense = zipfile.ZipInfo("dense.txt")  # highly compressible, but too small to fill a disk
    dense.compress_type = zipfile.ZIP_DEFLATED
    stored = zipfile.ZipInfo("stored.bin")  # big, but 1:1
    path = _synthetic_plus(tmp_path, [(dense, bytes(RATIO_CHECKED_FROM_BYTES - 1)), (stored, os.urandom(2 * RATIO_CHECKED_FROM_BYTES))])
    assert prepare_archive(str(path), cache_root=str(tmp_path / "cache"), api_url="http://127.0.0.1:9/v1").multimedia_uri


def test_more_than_1000_members_are_refused_and_1000_are_read(tmp_path):
    def filler(count: int) -> list[tuple[zipfile.ZipInfo, bytes]]:
        return [(zipfile.ZipInfo(f"extra/{i:05d}.txt"), b"x") for i in range(count)]

    members = len(zipfile.ZipFile(_synthetic_plus(tmp_path, [])).namelist())
    fits = _synthetic_plus(tmp_path, filler(MAX_MEMBERS - members))
    assert prepare_archive(str(fits), cache_root=str(tmp_path / "fits"), api_url="http://127.0.0.1:9/v1").multimedia_uri
    forget_prepared_archives()
    path = _synthetic_plus(tmp_path, filler(MAX_MEMBERS - members + 1))
    _prepare_refused(path, tmp_path / "cache", "refusing the archive, it has 1001 members .*more than 1000")


def test_a_download_spanning_thousands_of_datasets_is_read(tmp_path, monkeypatch):
    # GBIF adds one dataset/<uuid>.xml per constituent dataset: those are never extracted and have their own, far higher bound.
    monkeypatch.setattr(zip_checks, "MAX_DATASET_METADATA_MEMBERS", 2_500)
    datasets = [(zipfile.ZipInfo(f"dataset/{i:05d}.xml"), b"<eml/>") for i in range(2_000)]
    fits = _synthetic_plus(tmp_path, datasets)
    assert prepare_archive(str(fits), cache_root=str(tmp_path / "fits"), api_url="http://127.0.0.1:9/v1").multimedia_uri
    forget_prepared_archives()
    too_many = _synthetic_plus(tmp_path, datasets + [(zipfile.ZipInfo(f"dataset/x{i:05d}.xml"), b"<eml/>") for i in range(501)])
    _prepare_refused(too_many, tmp_path / "cache", "2501 of them dataset/\\*.xml")


def test_more_to_extract_than_the_cache_disk_has_free_is_refused_before_extraction(tmp_path, monkeypatch):
    path = _synthetic_plus(tmp_path, [])
    with zipfile.ZipFile(path) as archive:
        needed = sum(archive.getinfo(name).file_size for name in ("occurrence.txt", "multimedia.txt", "citations.txt", "metadata.xml"))
    free = [needed - 1]
    real_disk_usage = shutil.disk_usage

    def disk_usage(folder):
        assert str(folder).startswith(str(tmp_path))  # the nearest existing folder of the cache, not anywhere else
        return real_disk_usage(folder)._replace(free=free[0])

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    _prepare_refused(path, tmp_path / "cache" / "dwca",
                     f"extracting it needs {needed} bytes but the cache folder {tmp_path}/cache/dwca/odd-\\w+ has {needed - 1} bytes free")
    free[0] = needed
    assert Path(prepare_archive(str(path), cache_root=str(tmp_path / "cache" / "dwca"), api_url="http://127.0.0.1:9/v1").core_uri).is_file()


# ----------------------------------------------------------------------------- requesting a new download


PREDICATE = '{"type": "equals", "key": "ELEVATION", "value": "9500"}'


@pytest.fixture()
def gbif_with_requests(real_zip):
    faults = DownloadFaults()
    new = FakeDownload(key="0000042-210914110416597", doi="10.15468/dl.new042", archive=real_zip)
    routes = download_routes([], faults, requestable=new, credentials=("ann", "secret"), polls_before_ready=3)
    with FakeGbifApi(extra_routes=[routes]) as api:
        yield SimpleNamespace(api_url=api.base_url, faults=faults)


def test_predicate_download_is_requested_polled_and_read(gbif_with_requests, tmp_path, monkeypatch):
    monkeypatch.setenv("GBIF_USER", "ann")
    monkeypatch.setenv("GBIF_PWD", "secret")
    source = ReadDwcaMedia(DwcaReadSettings(None, download_predicate=PREDICATE, cache_root=str(tmp_path),
                                            api_url=gbif_with_requests.api_url, download_poll_seconds=0.01))
    prepared = prepare_source(source.settings)
    assert prepared.archive.key == "0000042-210914110416597" and prepared.archive.doi == "10.15468/dl.new042"
    faults = gbif_with_requests.faults
    assert faults.requests["request"] == 1 and faults.requests["metadata"] == 5  # 3 not ready, 1 ready, 1 resolving
    assert faults.download_requests == [
        {"creator": "ann", "notificationAddresses": [], "sendNotification": False, "format": "DWCA",
         "predicate": {"type": "equals", "key": "ELEVATION", "value": "9500"}}
    ]
    forget_prepared_archives()
    prepare_source(source.settings)
    assert faults.requests["request"] == 1  # one request per process and predicate, never a second download


def test_predicate_download_needs_credentials(gbif_with_requests, tmp_path, monkeypatch):
    monkeypatch.delenv("GBIF_USER", raising=False)
    monkeypatch.delenv("GBIF_PWD", raising=False)
    source = ReadDwcaMedia(DwcaReadSettings(None, download_predicate=PREDICATE + " ", cache_root=str(tmp_path),
                                            api_url=gbif_with_requests.api_url))
    with pytest.raises(OptionError, match="needs GBIF_USER and GBIF_PWD"):
        prepare_source(source.settings)
    monkeypatch.setenv("GBIF_USER", "ann")
    monkeypatch.setenv("GBIF_PWD", "wrong")
    with pytest.raises(DwcaError, match="GBIF refused the download request for user 'ann': HTTP 401"):
        prepare_source(DwcaReadSettings(None, download_predicate='{"type": "isNotNull", "parameter": "MEDIA_TYPE"}',
                                        cache_root=str(tmp_path), api_url=gbif_with_requests.api_url))
    assert gbif_with_requests.faults.download_requests == []


@pytest.mark.parametrize(("text", "message"), [("{nope", "not valid JSON"), ("[1]", "must be a GBIF predicate object")])
def test_bad_predicate_is_a_clear_error(text, message):
    with pytest.raises(OptionError, match=message):
        parse_predicate(text)


def test_dwca_and_predicate_together_are_refused():
    with pytest.raises(OptionError, match="exactly one of --dwca"):
        ReadDwcaMedia(DwcaReadSettings(KEY, download_predicate=PREDICATE))
    with pytest.raises(OptionError, match="exactly one of --dwca"):
        ReadDwcaMedia(DwcaReadSettings(None))
