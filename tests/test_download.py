"""DownloadMedia against the local media server: success, faults, safety, politeness, rerun."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_gbif import DEFAULT_USER_AGENT
from beam_gbif.core.errors import OptionError
from beam_gbif.core.records import MediaRecord, Status
from beam_gbif.io.hosts import shard_of
from beam_gbif.io.safety import AllowOnly
from beam_gbif.testing.collect import run_transform
from beam_gbif.testing.gcs_emulator import free_port
from beam_gbif.testing.media_server import MediaServer, image_bytes
from beam_gbif.transforms.download import DownloadMedia, DownloadSettings
from pipelines import stages

LOOPBACK_ONLY = AllowOnly(["127.0.0.1"])


def run_download(records: list[MediaRecord], transform: DownloadMedia, tmp_path: Path) -> tuple[list[MediaRecord], dict[str, int]]:
    """Runs Create → transform on the FnApiRunner; returns the result records and the beam_gbif counters."""
    return run_transform(transform, tmp_path, records=records)


def record(url: str, key: int = 1, label: str = "sp", split: str = "", media_type: str = "StillImage") -> MediaRecord:
    return MediaRecord(url=url, label=label, occurrence_key=key, split=split, media_type=media_type)


def dataset_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- the fault suite: one pipeline run, one assertion per case ---------------------------------------
FAULT_CASES = {
    # name: (path on the media server, expected status)
    "success": ("media/ok.jpg", Status.DOWNLOADED),
    "png": ("media/ok.png", Status.DOWNLOADED),
    "gif": ("media/ok.gif", Status.DOWNLOADED),
    "webp": ("media/ok.webp", Status.DOWNLOADED),
    "tiff": ("media/ok.tif", Status.DOWNLOADED),
    "not_found": ("status/404/nf.jpg", Status.FAILED_HTTP),
    "permanent_503": ("status/503/perm.jpg", Status.FAILED_HTTP),
    "500_then_success": ("flaky/2/flaky.jpg", Status.DOWNLOADED),
    "429_retry_after_then_success": ("ratelimit/1/1/limited.jpg", Status.DOWNLOADED),
    "html_with_200": ("html/page.jpg", Status.FAILED_NOT_MEDIA),
    "json_with_200": ("json/err.jpg", Status.FAILED_NOT_MEDIA),
    "truncated_body": ("truncated/cut.jpg", Status.FAILED_TRUNCATED),
    "reset_mid_body": ("reset/reset.jpg", Status.FAILED_CONNECTION),
    "slow_first_byte": ("slow_first_byte/3/sfb.jpg", Status.FAILED_TIMEOUT),
    "slow_body": ("slow_body/3/sb.jpg", Status.FAILED_TIMEOUT),
    "oversize": ("oversize/300000/big.jpg", Status.FAILED_TOO_LARGE),
    "oversize_streamed": ("oversize_stream/300000/bigs.jpg", Status.FAILED_TOO_LARGE),
    "redirect_chain": ("redirect/3/chain.jpg", Status.DOWNLOADED),
    "redirect_loop_too_long": ("redirect/15/long.jpg", Status.FAILED_HTTP),
    "redirect_to_ftp": ("redirect_to?location=ftp://127.0.0.1/x.jpg", Status.FAILED_REFUSED),
    "redirect_to_file": ("redirect_to?location=file:///etc/passwd", Status.FAILED_REFUSED),
    "wrong_content_type_real_jpeg": ("wrong_type/typed.jpg", Status.DOWNLOADED),
}
SUITE_SETTINGS = {"timeout": 1.0, "max_retries": 2, "backoff_base": 0.05, "backoff_max": 0.2, "max_bytes": 100_000,
                  "circuit_threshold": 1000}


@pytest.fixture(scope="module")
def fault_suite(media, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults")
    urls = {name: media.fault_url(path) for name, (path, _) in FAULT_CASES.items()}
    urls["redirect_to_other_loopback"] = media.fault_url(f"redirect_to?location=http://127.0.0.2:{media.port}/media/other.jpg")
    urls["connection_refused"] = f"http://127.0.0.1:{free_port()}/media/refused.jpg"  # nothing listens there
    urls["not_a_url"] = "not a url"
    urls["ftp_scheme"] = "ftp://127.0.0.1/media/x.jpg"
    records = [record(url, key=i, label=name) for i, (name, url) in enumerate(sorted(urls.items()))]
    started = time.monotonic()
    results, counters = run_download(records, DownloadMedia(DownloadSettings(str(out), address_policy=LOOPBACK_ONLY, **SUITE_SETTINGS)),
            out)
    return {"by_label": {r.label: r for r in results}, "out": out, "counters": counters, "seconds": time.monotonic() - started}


EXPECTED = {**{name: status for name, (_, status) in FAULT_CASES.items()},
            "redirect_to_other_loopback": Status.FAILED_REFUSED, "connection_refused": Status.FAILED_CONNECTION,
            "not_a_url": Status.FAILED_INVALID_URL, "ftp_scheme": Status.FAILED_REFUSED}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_fault_suite_status(fault_suite, case):
    result = fault_suite["by_label"][case]
    assert result.status == EXPECTED[case], result.error
    out = fault_suite["out"]
    if result.status == Status.DOWNLOADED:
        assert result.path and (out / result.path).is_file()
        assert (out / result.path).stat().st_size == result.bytes
        assert result.error == ""
    else:
        assert result.error, "a failure names its reason"
        assert result.path == "" and result.bytes == 0
        assert not list(out.glob(f"*/{result.basename}*")), "a failure leaves no file"


def test_fault_suite_never_hangs_and_leaves_only_finished_files(fault_suite):
    # 2 slow cases × 3 attempts × 1 s bound the run; a hang would blow far past this.
    assert fault_suite["seconds"] < 40
    out = fault_suite["out"]
    downloaded = sorted(r.path for r in fault_suite["by_label"].values() if r.status == Status.DOWNLOADED)
    assert dataset_files(out) == downloaded
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


def test_fault_suite_extension_and_type_come_from_the_body(fault_suite):
    by_label = fault_suite["by_label"]
    assert by_label["wrong_content_type_real_jpeg"].path.endswith(".jpg")
    assert by_label["wrong_content_type_real_jpeg"].content_type == "image/jpeg"
    for case, ext in [("png", ".png"), ("gif", ".gif"), ("webp", ".webp"), ("tiff", ".tif")]:
        assert by_label[case].path.endswith(ext)


def test_fault_suite_retries_only_what_is_worth_retrying(fault_suite, media):
    assert media.hits["/status/404/nf.jpg"] == 1
    assert media.hits["/status/503/perm.jpg"] == 3  # 1 + --max_retries
    assert media.hits["/flaky/2/flaky.jpg"] == 3
    assert media.hits["/html/page.jpg"] == 1
    first, second = media.times_of("/ratelimit/1/1/limited.jpg")
    assert second - first >= 0.95, "Retry-After: 1 honoured"
    counters = fault_suite["counters"]
    assert counters["media_downloaded"] == sum(1 for s in EXPECTED.values() if s == Status.DOWNLOADED)
    assert counters["media_failed"] == sum(1 for s in EXPECTED.values() if s != Status.DOWNLOADED)
    assert counters["media_failed_timeout"] == 2


def test_content_and_checksum_match_the_server(fault_suite):
    import hashlib

    result = fault_suite["by_label"]["success"]
    data = (fault_suite["out"] / result.path).read_bytes()
    assert data == image_bytes("ok", "jpg")
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.path == f"success/{result.basename}.jpg"


# -- layout, rerun, stale temp files -----------------------------------------------------------------
def test_layout_rerun_skips_everything_and_writes_nothing(media, tmp_path):
    out = tmp_path / "ds"
    records = [record(media.url(f"r{i}"), key=i, label=f"sp{i % 3}", split="train" if i % 2 else "test") for i in range(30)]
    records.append(record(media.fault_url("status/404/r404.jpg"), key=99))
    results, counters = run_download(records, DownloadMedia(DownloadSettings(str(out), address_policy=LOOPBACK_ONLY, max_retries=0)),
            tmp_path)
    assert counters["media_downloaded"] == 30 and counters["media_failed_http"] == 1
    for r in results:
        if r.status == Status.DOWNLOADED:
            assert r.path == f"{r.split}/{r.label_dir}/{r.basename}.jpg"
    before = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in out.rglob("*") if p.is_file()}
    media.reset_hits()
    again, counters = run_download(records, DownloadMedia(DownloadSettings(str(out), address_policy=LOOPBACK_ONLY, max_retries=0)),
            tmp_path)
    assert media.hits == {"/status/404/r404.jpg": 1}, "only the failed record is requested again"
    assert counters["media_skipped_existing"] == 30 and "media_downloaded" not in counters
    first = {r.url: r for r in results}
    for r in again:
        if r.status == Status.SKIPPED_EXISTING:
            assert (r.path, r.bytes, r.sha256, r.content_type) == (first[r.url].path, first[r.url].bytes, first[r.url].sha256, "image/jpeg")
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in out.rglob("*") if p.is_file()} == before


def test_existing_file_with_other_extension_is_skipped_and_stale_temp_removed(media, tmp_path):
    rec = record(media.url("pre"), label="sp")
    folder = tmp_path / "ds" / "sp"
    folder.mkdir(parents=True)
    (folder / f"{rec.basename}.png").write_bytes(b"\x89PNG\r\n\x1a\n-earlier")
    stale = folder / f".{rec.basename}.jpg.0123abcd.tmp"
    stale.write_bytes(b"half")
    other = record(media.url("fresh"), key=2, label="sp")
    (folder / f".{other.basename}.jpg.deadbeef.tmp").write_bytes(b"half")
    results, _ = run_download([rec, other], DownloadMedia(DownloadSettings(str(tmp_path / "ds"), address_policy=LOOPBACK_ONLY)), tmp_path)
    by_url = {r.url: r for r in results}
    assert by_url[rec.url].status == Status.SKIPPED_EXISTING and by_url[rec.url].path == f"sp/{rec.basename}.png"
    assert by_url[other.url].status == Status.DOWNLOADED
    assert media.hits["/media/pre.jpg"] == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{rec.basename}.png", f"{other.basename}.jpg"])


# -- safety ------------------------------------------------------------------------------------------
def test_loopback_refused_without_allow_private_hosts_and_never_contacted(media, tmp_path):
    media.reset_hits()
    urls = [media.url("private"), f"http://localhost:{media.port}/media/private2.jpg",
            f"http://[::ffff:127.0.0.1]:{media.port}/media/p3.jpg"]
    results, _ = run_download([record(u, key=i) for i, u in enumerate(urls)], DownloadMedia(DownloadSettings(str(tmp_path / "ds"))),
            tmp_path)
    assert [r.status for r in results] == [Status.FAILED_REFUSED] * 3
    assert all("refused" in r.error for r in results)
    assert media.total_hits == 0, "a refusal never depends on a connection attempt"
    assert not (tmp_path / "ds").exists() or dataset_files(tmp_path / "ds") == []


def test_allow_private_hosts_allows_loopback(media, tmp_path):
    media.reset_hits()
    results, _ = run_download([record(media.url("allowed"))], DownloadMedia(DownloadSettings(str(tmp_path / "ds"),
            allow_private_hosts=True)), tmp_path)
    assert results[0].status == Status.DOWNLOADED
    assert media.user_agents == {DEFAULT_USER_AGENT: 1}, "the project's one default User-Agent"


def test_from_options_user_agent_and_limits(media, tmp_path):
    options = PipelineOptions(["--output", str(tmp_path / "ds"), "--allow_private_hosts",
                               "--user_agent", "beam-gbif-test/9 (+mailto:t@e.st)", "--max_retries", "0", "--timeout", "5"])
    transform = stages.download_media(options)
    assert transform.settings.max_retries == 0 and transform.settings.timeout == 5
    media.reset_hits()
    results, _ = run_download([record(media.url("ua"))], transform, tmp_path)
    assert results[0].status == Status.DOWNLOADED
    assert media.user_agents == {"beam-gbif-test/9 (+mailto:t@e.st)": 1}


def test_defaults_bound_the_tail_and_memory(tmp_path):
    defaults = stages.download_media(PipelineOptions(["--output", str(tmp_path / "ds")])).settings
    assert (defaults.timeout, defaults.max_buffer_bytes) == (30, 1073741824)
    options = PipelineOptions(["--output", str(tmp_path / "ds"), "--max_buffer_bytes", "1000000"])
    assert stages.download_media(options).settings.max_buffer_bytes == 1_000_000


# -- politeness ----------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_per_host_concurrency_holds(tmp_path):
    with MediaServer(latency=0.1) as slow:
        records = [record(slow.url(f"c{i}"), key=i) for i in range(40)]
        transform = DownloadMedia(DownloadSettings(str(tmp_path / "ds"), address_policy=LOOPBACK_ONLY, per_host_concurrency=4))
        results, _ = run_download(records, transform, tmp_path)
        assert all(r.status == Status.DOWNLOADED for r in results)
        assert 2 <= slow.max_in_flight <= 4


@pytest.mark.timeout(60)
def test_per_host_rate_holds(media, tmp_path):
    media.reset_hits()
    # Three URLs in each of the host's 4 shards: the case where shards firing together would burst.
    urls = [media.url(f"rate{i}") for i in range(200)]
    urls = [url for shard in range(4) for url in [u for u in urls if shard_of(u, 4) == shard][:3]]
    records = [record(url, key=i) for i, url in enumerate(urls)]
    transform = DownloadMedia(DownloadSettings(str(tmp_path / "ds"), address_policy=LOOPBACK_ONLY, per_host_concurrency=4,
            per_host_rate=10))
    run_download(records, transform, tmp_path)
    times = sorted(t for t, _ in media.hit_times)
    assert len(times) == 12
    # 4 shards at 2.5 requests/s each, interleaved: ~10 requests/s for the host, and no burst
    # at the start (all four shards firing at once would put 12 requests in the first second).
    assert (len(times) - 1) / (times[-1] - times[0]) <= 10 * 1.1
    assert max(sum(1 for t in times if start <= t < start + 1.0) for start in times) <= 11


@pytest.mark.timeout(60)
def test_circuit_breaker_backs_off_a_failing_host(media, tmp_path):
    media.reset_hits()
    records = [record(media.fault_url(f"status/503/cb{i}.jpg"), key=i) for i in range(7)]
    transform = DownloadMedia(DownloadSettings(str(tmp_path / "ds"), address_policy=LOOPBACK_ONLY, per_host_concurrency=1,
            max_retries=0, timeout=2,
                              circuit_threshold=3, circuit_cooldown=0.3, circuit_max_cooldown=0.6))
    results, _ = run_download(records, transform, tmp_path)
    assert all(r.status == Status.FAILED_HTTP for r in results)
    times = sorted(t for t, _ in media.hit_times)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(g < 0.25 for g in gaps[:2]), f"no pause before the circuit opens: {gaps}"
    assert all(g >= 0.28 for g in gaps[2:]), f"a pause after every failure once open: {gaps}"
    assert sum(gaps[2:]) >= 0.3 + 0.6 * 3 - 0.05, "the pause doubles up to its cap"


# -- bad input -------------------------------------------------------------------------------------------
def test_output_that_is_a_file_is_a_clear_error(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(OptionError, match="exists and is not a folder"):
        DownloadMedia(DownloadSettings(str(target)))


@pytest.mark.parametrize("kwargs, message", [({"max_concurrency": 0}, "--max_concurrency must be at least 1, got 0"),
                                             ({"per_host_concurrency": 0}, "--per_host_concurrency must be at least 1, got 0"),
                                             ({"per_host_rate": -1}, "--per_host_rate must be at least 0, got -1"),
                                             ({"max_retries": -1}, "--max_retries must be at least 0, got -1"),
                                             ({"timeout": 0}, "--timeout must be positive, got 0"),
                                             ({"max_bytes": 0}, "--max_bytes must be positive, got 0"),
                                             ({"max_buffer_bytes": 0}, "--max_buffer_bytes must be positive, got 0")])
def test_bad_settings_name_the_flag(tmp_path, kwargs, message):
    with pytest.raises(OptionError, match=message):
        DownloadMedia(DownloadSettings(str(tmp_path), **kwargs))


def test_unsafe_label_and_split_stay_inside_the_root(media, tmp_path):
    rec = MediaRecord(url=media.url("escape"), label="../../etc", occurrence_key=1, label_dir="../../etc", split="../x")
    results, _ = run_download([rec], DownloadMedia(DownloadSettings(str(tmp_path / "ds"), address_policy=LOOPBACK_ONLY)), tmp_path)
    assert results[0].status == Status.DOWNLOADED
    assert ".." not in results[0].path.split("/")
    assert (tmp_path / "ds" / results[0].path).is_file()
    assert os.path.commonpath([tmp_path / "ds", (tmp_path / "ds" / results[0].path).resolve()]) == str(tmp_path / "ds")


def test_progress_is_logged_and_counted(media, tmp_path, caplog):
    caplog.set_level("INFO", logger="beam_gbif.download")
    records = [record(media.url(f"p{i}"), key=i) for i in range(5)] + [record(media.fault_url("status/404/p404.jpg"), key=9)]
    transform = DownloadMedia(DownloadSettings(str(tmp_path / "ds"), address_policy=LOOPBACK_ONLY, max_retries=0, progress_interval=0))
    _, counters = run_download(records, transform, tmp_path)
    assert counters["media_downloaded"] == 5 and counters["media_failed_http"] == 1 and counters["media_http_attempts"] == 6
    assert counters["media_bytes_downloaded"] == sum(len(image_bytes(f"p{i}")) for i in range(5))
    lines = [r.getMessage() for r in caplog.records if r.name == "beam_gbif.download"]
    assert any("6 records done (5 downloaded, 0 skipped)" in line and "FAILED_HTTP=1" in line for line in lines), lines
