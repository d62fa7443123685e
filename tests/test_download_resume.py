"""Reruns. Kill-and-resume: a download pipeline killed with SIGKILL mid-run, then rerun, completes the
dataset without downloading any finished file again and leaves no partial or temp file. Rerun of
failures: ``--retry_failed_from`` asks for every failed URL again, and no other, in seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beam_gbif.core.records import MediaRecord, Status
from beam_gbif.io.fetch import DownloadSettings
from beam_gbif.io.manifest_files import read_manifest
from beam_gbif.testing.gcs_emulator import NO_METADATA_ENV
from beam_gbif.testing.media_server import MediaServer, image_bytes
from beam_gbif.testing.processes import kill_when

PROJECT = Path(__file__).resolve().parents[1]

JOB = """
import json, sys
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from beam_gbif.transforms.download import DownloadMedia
from beam_gbif.io.safety import AllowOnly
from beam_gbif.core.records import MediaRecord, Status
from beam_gbif.io.manifest_files import read_manifest
from beam_gbif.transforms.stats import metric_counters
from beam_gbif.transforms.download import DownloadSettings

records_file, output, counters_file = sys.argv[1:4]
records = [MediaRecord.from_dict(row) for row in json.load(open(records_file))]
pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
(pipeline | beam.Create(records)
 | DownloadMedia(DownloadSettings(output, address_policy=AllowOnly(["127.0.0.1"]), max_concurrency=8, per_host_concurrency=8,
         max_retries=0)))
result = pipeline.run()
result.wait_until_finish()
json.dump(metric_counters(result), open(counters_file, "w"))
"""


def start_job(tmp_path: Path, records_file: Path, output: Path) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    counters = tmp_path / f"counters-{time.monotonic_ns()}.json"
    env = {**os.environ, **NO_METADATA_ENV, "PYTHONPATH": str(PROJECT)}
    process = subprocess.Popen([sys.executable, str(script), str(records_file), str(output), str(counters)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    return process, counters


def finished_files(output: Path) -> set[str]:
    return {str(p.relative_to(output)) for p in output.rglob("*") if p.is_file() and not p.name.startswith(".")}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_then_rerun_completes_without_redownloading(tmp_path):
    output = tmp_path / "ds"
    with MediaServer(latency=0.05) as media:
        records = [MediaRecord(url=media.url(f"k{i}"), label=f"sp{i % 4}", occurrence_key=i) for i in range(400)]
        records_file = tmp_path / "records.json"
        records_file.write_text(json.dumps([r.to_dict() for r in records]))

        process, _ = start_job(tmp_path, records_file, output)
        kill_when(process, lambda: output.exists() and len(finished_files(output)) >= 40)
        done_before = finished_files(output)
        assert 40 <= len(done_before) < len(records), "killed mid-run"

        media.reset_hits()
        process, counters_file = start_job(tmp_path, records_file, output)
        _, err = process.communicate(timeout=180)
        assert process.returncode == 0, err.decode()[-3000:]
        counters = json.loads(counters_file.read_text())

    expected = {f"{r.label_dir}/{r.basename}.jpg": r.url.rsplit("/", 1)[1][:-4] for r in records}
    assert finished_files(output) == set(expected), "dataset complete"
    for rel, name in expected.items():
        assert (output / rel).read_bytes() == image_bytes(name), f"{rel} whole and correct"
    assert not [p for p in output.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")], "no temp file left"
    requested = {path.rsplit("/", 1)[1][:-4] for path in media.hits}
    finished_names = {expected[rel] for rel in done_before}
    assert not requested & finished_names, "no finished file requested again"
    assert counters.get("media_skipped_existing", 0) == len(done_before)
    assert counters.get("media_downloaded", 0) == len(records) - len(done_before)
    assert counters.get("media_failed", 0) == 0


# -- rerun of failures ---------------------------------------------------------------------------------------
PIPELINE_START = 20.0  # seconds a local run spends outside the downloads (generous: a loaded machine)


def run_job(*argv: str) -> float:
    from pipelines.gbif_media import run

    started = time.monotonic()
    assert run(["--source=urls", "--allow_private_hosts", "--timeout=3", "--max_retries=3", "--runner=FnApiRunner", *argv]) == 0
    return time.monotonic() - started


@pytest.mark.timeout(300)
def test_rerun_of_failures_asks_for_each_failed_url_again_and_finishes_in_seconds(tmp_path):
    output = tmp_path / "ds"
    with MediaServer() as media:
        failing = {**{f"status/404/gone{i}.jpg": Status.FAILED_HTTP for i in range(17)},
                   **{f"html/page{i}.jpg": Status.FAILED_NOT_MEDIA for i in range(16)},
                   **{f"truncated/cut{i}.jpg": Status.FAILED_TRUNCATED for i in range(16)},
                   "status/404/late.jpg?delay=1.5": Status.FAILED_HTTP}  # the slowest single answer: 1.5 s
        urls = [media.url(f"good{i}") for i in range(150)] + [media.fault_url(path) for path in failing]
        listing = tmp_path / "list.csv"
        listing.write_text("url,label\n" + "".join(f"{url},sp{i % 5}\n" for i, url in enumerate(urls)), encoding="utf-8")
        run_job(f"--input={listing}", f"--output={output}")
        media.reset_hits()
        seconds = run_job(f"--retry_failed_from={output}", f"--output={output}")
        requested = set(media.hits)

    assert requested == {"/" + path.partition("?")[0] for path in failing}, "every failed URL again, and nothing on disk"
    by_url = {r.url: r for r in read_manifest(str(output))}
    assert {path: by_url[media.fault_url(path)].status for path in failing} == failing, "each keeps its own reason"
    assert sum(r.status == Status.DOWNLOADED for r in by_url.values()) == 150
    settings = DownloadSettings(str(output))
    backoffs = sum(min(settings.backoff_max, settings.backoff_base * 2 ** k) * 1.5 for k in range(3))
    assert seconds <= (3 + 1) * 1.5 + backoffs + PIPELINE_START, f"the rerun took {seconds:.1f} s"
