"""Dataflow readiness: the DataflowRunner translates the full pipeline offline (``--dry_run``),
and the pipeline run on two worker processes produces exactly what the in-process run does.

The translation runs in a subprocess inside ``unshare -rn`` (loopback only) when available,
so any network call during pipeline construction, staging or translation fails the test.
Run ``python3 tests/test_dataflow.py translate OUT_JSON`` to do the same by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from beam_gbif.core.sniff import is_media_file_name
from beam_gbif.testing.gcs_emulator import NO_METADATA_ENV

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BEAM_GBIF_SHARED_DATA", ROOT.parent / "shared" / "data"))
BUCKET = "beam-gbif-test"
DATAFLOW_ARGS = ["--runner=DataflowRunner", "--project=beam-gbif-test", "--region=europe-west1", f"--temp_location=gs://{BUCKET}/tmp",
                 "--dry_run=true", f"--output=gs://{BUCKET}/dataset"]
STAGES = ("ReadMedia", "FilterMedia", "SampleStreams", "AssignSplits", "DownloadMedia", "WriteManifest")


# --------------------------------------------------------------------------- translation


def _translate_all(out_file: Path, work: Path) -> None:
    """Builds the full pipeline for each source and runs it on the DataflowRunner with --dry_run.

    Every path the workers read is on gs:// (the GCS emulator), as a real Dataflow job needs.
    """
    sys.path.insert(0, str(ROOT))
    import apache_beam as beam

    from beam_gbif.io.store import gcs_client
    from beam_gbif.testing.fake_gbif import FakeGbifApi
    from beam_gbif.testing.gcs_emulator import GcsEmulator
    from beam_gbif.testing.synthetic import SyntheticOccurrences
    from pipelines.gbif_media import build, make_options

    report: dict[str, Any] = {}
    store = SyntheticOccurrences([5352251, 3190653], ["ds-a", "ds-b"], per_stream=5, media_base_url="http://127.0.0.1:9")
    with GcsEmulator(bucket=BUCKET) as gcs, FakeGbifApi(store) as api:
        bucket = gcs_client().bucket(gcs.bucket)
        bucket.blob("lists/urls.csv").upload_from_string("url,label,split\nhttp://127.0.0.1:9/a.jpg,a,\nhttp://127.0.0.1:9/b.jpg,b,test\n")
        variants: dict[str, list[str]] = {
            # The one variant that also builds and stages the package, as a real submission does.
            "urls": [f"--input=gs://{BUCKET}/lists/urls.csv", "--label=label", f"--setup_file={ROOT / 'setup.py'}"],
            "dwca": [f"--dwca={SHARED_DATA / 'dwca' / '0026367-210914110416597.zip'}", f"--dwca_root_path=gs://{BUCKET}/dwca",
                     "--label=speciesKey"],
            "api": [f"--gbif_api_url={api.base_url}", '--query={"speciesKey": [5352251, 3190653]}', "--label=speciesKey",
                    "--output_format=webdataset", "--shard_size=3", "--extra_fields=family,http://rs.tdwg.org/dwc/terms/countryCode"],
        }
        common = ["--licenses=CC0_1_0,CC_BY_4_0,CC_BY_NC_4_0", "--random_subsets=train=0.9,test=0.1", "--split_streams_by=speciesKey",
                  "--nb_samples=8"]
        for name, argv in variants.items():
            options = make_options(DATAFLOW_ARGS + common + argv)
            pipeline = beam.Pipeline(options=options)
            build(pipeline, options)
            result = pipeline.run()
            proto = result.job.proto_pipeline
            names = sorted({t.unique_name for t in proto.components.transforms.values()})
            job_type = result.job.proto.type
            report[name] = {"state": str(result.state), "transforms": names, "job_type": getattr(job_type, "name", str(job_type)),
                            "job_id": result.job.proto.id}
        local = make_options([*DATAFLOW_ARGS, f"--input={work / 'urls.csv'}", "--label=label"])
        try:
            build(beam.Pipeline(options=local), local)
            report["local_input_error"] = ""
        except Exception as exc:  # noqa: BLE001 - reported to the test
            report["local_input_error"] = str(exc)
    import socket

    report["interfaces"] = sorted(name for _, name in socket.if_nameindex())
    out_file.write_text(json.dumps(report), encoding="utf-8")


def _loopback_only_prefix() -> list[str]:
    """``unshare -rn`` (a network namespace of our own) with its loopback up: 127.0.0.1 works, nothing else exists."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if not unshare or subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode != 0:
        return []
    if ip and subprocess.run([unshare, "-rn", ip, "link", "set", "lo", "up"], capture_output=True).returncode == 0:
        return [unshare, "-rn", "sh", "-c", f'{ip} link set lo up && exec "$@"', "loopback-only"]
    return []


@pytest.fixture(scope="module")
def translation(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("dataflow")
    out_file = work / "report.json"
    env = dict(os.environ, **NO_METADATA_ENV, PYTHONPATH=str(ROOT))
    command = [*_loopback_only_prefix(), sys.executable, str(Path(__file__)), "translate", str(out_file), str(work)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240, cwd=work)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(out_file.read_text(encoding="utf-8"))


def test_dataflow_runner_translates_every_source_offline(translation: dict[str, Any]) -> None:
    for name in ("urls", "dwca", "api"):
        report = translation[name]
        assert report["state"].endswith("DONE") and report["job_type"].endswith("BATCH"), (name, report)
        for stage in STAGES:
            assert stage in report["transforms"], f"{name}: {stage} missing from the Dataflow job"
        assert "WriteManifest/Stats/WriteStatsJson" in report["transforms"]
        # No launcher waits for a Dataflow job: the job writes the dataset card itself, after stats.json.
        assert "WriteCard/WriteCardFiles" in report["transforms"], name
        assert {"WriteDataset/GroupBySplit", "WriteDataset/WriteShards", "WriteDataset/RemoveStaging"} <= set(report["transforms"]), name
        # Dataflow workers share no disk: their joins and de-duplication use Dataflow's own shuffle.
        assert not [t for t in report["transforms"] if "SpillToBuckets" in t], name
        shuffles = {"FilterMedia/DeduplicateUrls/GroupByUrl/GroupByKey", "DownloadMedia/GroupByHostShard/GroupByKey"}
        assert shuffles <= set(report["transforms"]), name


def test_translation_ran_without_network_and_submitted_nothing(translation: dict[str, Any]) -> None:
    # Inside a loopback-only namespace (where unshare works) anything but 127.0.0.1 is unreachable:
    # staging, auth and submission were all skipped by --dry_run, or the subprocess would have failed.
    if not _loopback_only_prefix():
        pytest.skip("unshare -rn is not available here; the translation ran with the offline environment only")
    assert translation["interfaces"] == ["lo"]  # the translation really ran where only loopback exists
    assert [translation[name]["job_id"] for name in ("urls", "dwca", "api")] == ["", "", ""]  # no job was created


def test_local_paths_are_refused_for_dataflow_workers(translation: dict[str, Any]) -> None:
    assert "--input" in translation["local_input_error"] and "use gs://" in translation["local_input_error"]


# --------------------------------------------------------------------------- two processes vs one


@pytest.fixture
def media() -> Iterator[Any]:
    from beam_gbif.testing.media_server import MediaServer

    with MediaServer() as server:
        yield server


def _dataset_files(output: Path) -> dict[str, str]:
    # The downloaded media only (the card, its charts, stats.json and the manifest say when and how: they differ by run).
    return {str(p.relative_to(output)): hashlib.sha256(p.read_bytes()).hexdigest() for p in output.rglob("*")
            if p.is_file() and is_media_file_name(p.name)}


def _comparable_stats(output: Path) -> dict[str, Any]:
    stats = json.loads((output / "stats.json").read_text(encoding="utf-8"))
    return {k: v for k, v in stats.items() if k not in ("output", "run_id", "seconds")}


def _run_one_and_two_processes(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    from pipelines.gbif_media import run

    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the worker processes import beam_gbif
    for name, value in NO_METADATA_ENV.items():
        monkeypatch.setenv(name, value)
    one, two = tmp_path / "one", tmp_path / "two"
    assert run([*argv, f"--output={one}", "--runner=FnApiRunner"]) == 0
    assert run([*argv, f"--output={two}", "--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]) == 0
    return one, two


def _assert_same_dataset(one: Path, two: Path, expected_records: int) -> None:
    from beam_gbif.transforms.manifest import read_attribution, read_manifest

    manifest = read_manifest(str(one))
    assert len(manifest) == expected_records
    assert read_manifest(str(two)) == manifest
    assert _dataset_files(two) == _dataset_files(one)
    assert _comparable_stats(two) == _comparable_stats(one)
    assert sorted(map(json.dumps, read_attribution(str(two)))) == sorted(map(json.dumps, read_attribution(str(one))))
    assert {record.status for record in manifest} == {"DOWNLOADED"}
    # Beside the images: classes.json and each split's metadata.jsonl (the same bytes from one or two processes, above).
    assert len([f for f in _dataset_files(one) if not f.endswith((".json", ".jsonl"))]) == expected_records


@pytest.mark.slow
def test_two_worker_processes_give_the_same_dataset_as_one_from_a_url_list(tmp_path: Path, media: Any,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    listing = tmp_path / "urls.csv"
    rows = [f"{media.url(str(i))},{['Amanita muscaria', '5352251', '3190653'][i % 3]},{'test' if i % 7 == 0 else ''},CC BY 4.0"
            for i in range(30)]
    listing.write_text("url,label,split,license\n" + "\n".join(rows) + "\n", encoding="utf-8")
    argv = [f"--input={listing}", "--label=label", "--random_subsets=train=0.8,test=0.2", "--licenses=CC_BY_4_0",
            "--allow_private_hosts", "--timeout=20", "--max_retries=1"]
    _assert_same_dataset(*_run_one_and_two_processes(argv, tmp_path, monkeypatch), expected_records=30)


@pytest.mark.slow
def test_two_worker_processes_give_the_same_dataset_as_one_from_the_api(tmp_path: Path, media: Any,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole chain: read planning, licence filter, exact seeded sampling, splits, download, manifest."""
    from beam_gbif.testing.fake_gbif import FakeGbifApi
    from beam_gbif.testing.synthetic import SyntheticOccurrences

    store = SyntheticOccurrences([5352251, 3190653], ["ds-a", "ds-b"], per_stream=12, media_base_url=media.base_url, seed=5)
    with FakeGbifApi(store) as api:
        argv = [f"--gbif_api_url={api.base_url}", '--query={"speciesKey": [5352251, 3190653]}', "--label=speciesKey",
                "--split_streams_by=speciesKey,datasetKey", "--nb_samples=10", "--seed=3", "--random_subsets=train=0.7,test=0.3",
                "--licenses=CC0_1_0,CC_BY_4_0,CC_BY_NC_4_0", "--allow_private_hosts", "--timeout=20", "--max_retries=1"]
        one, two = _run_one_and_two_processes(argv, tmp_path, monkeypatch)
    _assert_same_dataset(one, two, expected_records=10)


@pytest.mark.slow
def test_dry_run_makes_no_media_request(tmp_path: Path, media: Any) -> None:
    from pipelines.gbif_media import run

    listing = tmp_path / "urls.csv"
    listing.write_text("".join(f"{media.url(str(i))}\n" for i in range(5)), encoding="utf-8")
    code = run([f"--input={listing}", f"--output={tmp_path / 'out'}", "--runner=FnApiRunner", "--allow_private_hosts", "--dry_run"])
    assert code == 0
    assert media.total_hits == 0
    assert not list((tmp_path / "out").rglob("*.jpg"))


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "translate":
    _translate_all(Path(sys.argv[2]), Path(sys.argv[3]))
