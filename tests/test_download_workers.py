"""Per-host politeness across worker processes: two FnApiRunner workers never exceed --per_host_concurrency."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_gbif.core.records import MediaRecord, Status
from beam_gbif.io.safety import AllowOnly
from beam_gbif.testing.media_server import MediaServer
from beam_gbif.transforms.download import DownloadMedia, DownloadSettings

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_per_host_limit_holds_across_two_worker_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(PROJECT))  # the worker processes import beam_gbif
    with MediaServer(latency=0.1) as media:
        records = [MediaRecord(url=media.url(f"w{i}"), label=f"sp{i % 3}", occurrence_key=i) for i in range(80)]
        results_file = tmp_path / "results"
        options = PipelineOptions(["--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"])
        with beam.Pipeline(options=options) as pipeline:
            (pipeline
             | beam.Create(records)
             | DownloadMedia(DownloadSettings(str(tmp_path / "ds"), address_policy=AllowOnly(["127.0.0.1"]), per_host_concurrency=4))
             | beam.Map(lambda r: json.dumps(r.to_dict()))
             | beam.io.WriteToText(str(results_file), shard_name_template=""))
        results = [MediaRecord.from_dict(json.loads(line)) for line in results_file.read_text().splitlines()]
        assert sorted(r.url for r in results) == sorted(r.url for r in records), "one result per record"
        assert all(r.status == Status.DOWNLOADED for r in results)
        assert media.total_hits == 80, "each file fetched once"
        assert 2 <= media.max_in_flight <= 4
