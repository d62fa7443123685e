"""beam-gbif inspect OUTPUT [--verify]: the summary from the manifest; every file checked against its row."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from beam_gbif.testing.fake_dataset import write_fake_dataset
from beam_gbif.testing.gcs_emulator import NO_METADATA_ENV
from pipelines import gbif_media, inspect

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    write_fake_dataset(tmp_path, files=60, labels=3)
    return tmp_path


def test_inspect_prints_the_summary_of_the_manifest(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert inspect.run([str(dataset)]) == 0
    out = capsys.readouterr().out
    assert "60 records: 60 files in the dataset, 0 failed" in out and "label0 20, label1 20, label2 20" in out


def test_verify_finds_a_deleted_a_modified_and_an_extra_file(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert inspect.run([str(dataset), "--verify"]) == 0
    assert ": 0 missing, 0 changed, 0 unlisted" in capsys.readouterr().out
    files = sorted((dataset / "train").rglob("*.jpg"))
    files[0].unlink()
    files[1].write_bytes(files[1].read_bytes()[:-1] + b"X")  # same size, other bytes: only the sha256 tells
    extra = files[2].with_name("f" * 40 + ".png")
    extra.write_bytes(b"unlisted")
    (dataset / "README.md").write_text("the card is no media file")
    assert inspect.run([str(dataset), "--verify", "--workers=4"]) == 1
    out = capsys.readouterr().out
    assert "1 missing, 1 changed, 1 unlisted" in out
    rel = [str(p.relative_to(dataset)) for p in (files[0], files[1], extra)]
    assert f"  missing: {rel[0]}" in out and f"  changed: {rel[1]}" in out and f"  unlisted: {rel[2]}" in out


def test_the_console_command_dispatches_inspect(dataset: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["beam-gbif", "inspect", str(dataset), "--verify"])
    with pytest.raises(SystemExit) as exited:
        gbif_media.main()
    assert exited.value.code == 0 and "verify: 60 files checked" in capsys.readouterr().out


def test_python_m_pipelines_inspect_and_a_folder_without_manifest(tmp_path: Path) -> None:
    env = {**os.environ, **NO_METADATA_ENV, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "pipelines.inspect", str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"beam-gbif: error: {tmp_path} has no manifest/*.avro: not a beam-gbif dataset (or a run that never finished); "
        "name the --output of a run"]


@pytest.fixture(scope="module")
def gcs():
    from beam_gbif.testing.gcs_emulator import GcsEmulator

    with GcsEmulator(bucket="beam-gbif-inspect") as emulator:
        yield emulator


@pytest.mark.timeout(120)
def test_verify_a_dataset_on_gcs(gcs, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from beam_gbif.io.store import store_for

    write_fake_dataset(tmp_path, files=12, labels=2)
    store = store_for(f"gs://{gcs.bucket}/ds")
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file()):
        store.write_atomic(str(path.relative_to(tmp_path)), path.read_bytes())
    output = f"gs://{gcs.bucket}/ds"
    assert inspect.run([output, "--verify"]) == 0
    assert "12 records: 12 files in the dataset" in capsys.readouterr().out
    gone = sorted(store.list("train"))[0]
    store.delete(gone)
    assert inspect.run([output, "--verify"]) == 1
    assert f"  missing: {gone}" in capsys.readouterr().out
