"""Dataset formats (issue 13) read back with real readers: webdataset (and tarfile), pyarrow, the ``tfrecord``
package (and an independent CRC32C), Hugging Face ``datasets``; determinism, kill-and-resume, GCS, bad options."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from beam_gbif.core.records import Status
from beam_gbif.io.manifest_files import read_attribution, read_manifest
from beam_gbif.testing.gcs_emulator import NO_METADATA_ENV
from beam_gbif.testing.media_server import MediaServer
from beam_gbif.testing.processes import kill_when
from pipelines.gbif_media import run

PROJECT = Path(__file__).resolve().parents[1]
FORMATS = ("imagefolder", "webdataset", "tfrecord", "parquet")
# Labels that are no safe file name: each must keep working in every format, raw in every record.
LABELS = ("Amanita muscaria", "a/b", "CON", "ünï ☃")
RECORDS = 23
SHARD_SIZE = 4


def _listing(media: Any, folder: Path, count: int = RECORDS, prefix: str = "f") -> Path:
    listing = folder / f"urls-{prefix}.csv"
    rows = [f'{media.url(f"{prefix}{i}")},"{LABELS[i % len(LABELS)]}",CC BY 4.0,Family{i % 3}' for i in range(count)]
    listing.write_text("url,label,license,family\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return listing


def _argv(listing: Path, output: str, output_format: str, *extra: str) -> list[str]:
    return [f"--input={listing}", "--label=label", "--random_subsets=train=0.7,test=0.3", "--seed=7", "--allow_private_hosts",
            f"--output={output}", f"--output_format={output_format}", f"--shard_size={SHARD_SIZE}", "--runner=FnApiRunner",
            "--extra_fields=family,eventDate", *extra]


@pytest.fixture(scope="module")
def datasets(media, tmp_path_factory) -> dict[str, Path]:
    """One run per format from the same URL list and seed."""
    root = tmp_path_factory.mktemp("formats")
    listing = _listing(media, root)
    outputs = {name: root / name for name in FORMATS}
    for name, output in outputs.items():
        assert run(_argv(listing, str(output), name)) == 0
    return outputs


def _manifest_by_key(output: Path) -> dict[str, Any]:
    rows = read_manifest(str(output))
    assert len(rows) == RECORDS and {row.status for row in rows} == {Status.DOWNLOADED}
    return {row.key: row for row in rows}


def _shards(output: Path, suffix: str) -> list[Path]:
    return sorted(p for p in output.rglob(f"*{suffix}") if "manifest" not in p.parts)


def _read_webdataset(output: Path) -> dict[str, dict[str, Any]]:
    import webdataset as wds

    samples = {}
    for shard in _shards(output, ".tar"):
        for sample in wds.WebDataset(str(shard), shardshuffle=False, empty_check=False):
            meta = json.loads(sample["json"])
            samples[sample["__key__"]] = {"image": sample["jpg"], "label": meta["label"], "class_index": int(sample["cls"]),
                                          "meta": meta, "shard": shard.relative_to(output).as_posix(),
                                          "family": meta["family"], "eventDate": meta["eventDate"]}
    return samples


def _read_parquet(output: Path) -> dict[str, dict[str, Any]]:
    import pyarrow.parquet as pq

    samples = {}
    for shard in _shards(output, ".parquet"):
        for row in pq.read_table(shard).to_pylist():
            samples[row["key"]] = {**row, "shard": shard.relative_to(output).as_posix()}
    return samples


def _check_tfrecord_framing(data: bytes) -> int:
    """Every record's length and data CRCs, checked with the ``crc32c`` package (not the writer's google_crc32c)."""
    import crc32c

    def masked(chunk: bytes) -> int:
        crc = crc32c.crc32c(chunk)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    offset = count = 0
    while offset < len(data):
        length_bytes = data[offset:offset + 8]
        (length,) = struct.unpack("<Q", length_bytes)
        assert struct.unpack("<I", data[offset + 8:offset + 12])[0] == masked(length_bytes)
        body = data[offset + 12:offset + 12 + length]
        assert struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])[0] == masked(body)
        offset += 16 + length
        count += 1
    assert offset == len(data)
    return count


def _read_tfrecord(output: Path) -> dict[str, dict[str, Any]]:
    from tfrecord.reader import tfrecord_loader

    description = {"image/encoded": "byte", "image/format": "byte", "image/height": "int", "image/width": "int",
                   "image/class/label": "int", "image/class/text": "byte", "image/key/sha256": "byte", "gbif/key": "byte",
                   "gbif/occurrence_key": "int", "gbif/license": "byte", "gbif/url": "byte", "gbif/family": "byte",
                   "gbif/eventDate": "byte"}
    samples = {}
    for shard in _shards(output, ".tfrecord"):
        count = _check_tfrecord_framing(shard.read_bytes())
        examples = list(tfrecord_loader(str(shard), None, description))
        assert len(examples) == count
        for ex in examples:
            key = bytes(ex["gbif/key"]).decode()
            samples[key] = {"image": bytes(ex["image/encoded"]), "label": bytes(ex["image/class/text"]).decode(),
                            "class_index": int(ex["image/class/label"][0]), "sha": bytes(ex["image/key/sha256"]).decode(),
                            "width": int(ex["image/width"][0]), "format": bytes(ex["image/format"]).decode(),
                            "family": bytes(ex["gbif/family"]).decode(), "eventDate": bytes(ex["gbif/eventDate"]).decode(),
                            "shard": shard.relative_to(output).as_posix()}
    return samples


READERS = {"webdataset": _read_webdataset, "parquet": _read_parquet, "tfrecord": _read_tfrecord}


@pytest.mark.parametrize("output_format", sorted(READERS))
def test_sharded_formats_hold_every_image_with_the_manifest_sha256_and_class_index(datasets, output_format):
    output = datasets[output_format]
    classes = json.loads((output / "classes.json").read_text(encoding="utf-8"))
    assert classes == {label: index for index, label in enumerate(sorted(LABELS))}
    manifest = _manifest_by_key(output)
    samples = READERS[output_format](output)
    assert set(samples) == set(manifest), "every stored image, once, under its key"
    for key, sample in samples.items():
        row = manifest[key]
        assert hashlib.sha256(sample["image"]).hexdigest() == row.sha256
        assert sample["label"] == row.label and sample["class_index"] == classes[row.label] == row.class_index
        assert sample["shard"] == row.shard and row.shard.startswith(f"{row.split}/{row.split}-")
        assert key == hashlib.sha1(row.url.encode()).hexdigest()
        # --extra_fields from the URL list's columns: a column it lacks (eventDate) is empty, never "None".
        assert (sample["family"], sample["eventDate"]) == (dict(row.extra)["family"], "") and sample["family"].startswith("Family")
    attribution = {line["key"]: line for line in read_attribution(str(output))}
    assert {key: line["shard"] for key, line in attribution.items()} == {key: row.shard for key, row in manifest.items()}
    assert not (output / "_staging").exists(), "staged downloads removed once their shards exist"


def test_shards_hold_exactly_shard_size_records_but_the_last(datasets):
    for output_format in READERS:
        output = datasets[output_format]
        rows = read_manifest(str(output))
        for split in {row.split for row in rows}:
            in_split = sum(row.split == split for row in rows)
            sizes = [sum(row.shard == shard for row in rows) for shard in sorted({r.shard for r in rows if r.split == split})]
            assert sizes[:-1] == [SHARD_SIZE] * (len(sizes) - 1) and 1 <= sizes[-1] <= SHARD_SIZE and sum(sizes) == in_split
    tfrecords = [p.name for p in _shards(datasets["tfrecord"], ".tfrecord") if p.parent.name == "train"]
    assert tfrecords == [f"train-{i:06d}-of-{len(tfrecords):06d}.tfrecord" for i in range(len(tfrecords))]


def test_webdataset_members_are_safe_keys_with_fixed_tar_headers(datasets):
    output = datasets["webdataset"]
    manifest = _manifest_by_key(output)
    for shard in _shards(output, ".tar"):
        with tarfile.open(shard) as tar:
            members = tar.getmembers()
            names = [m.name for m in members]
            keys = list(dict.fromkeys(name.split(".")[0] for name in names))
            assert names == [f"{key}.{ext}" for key in keys for ext in ("jpg", "json", "cls")]
            assert {(m.mtime, m.uid, m.gid, m.mode, m.uname, m.gname) for m in members} == {(946684800, 0, 0, 0o644, "", "")}
            meta = json.loads(tar.extractfile(f"{keys[0]}.json").read())
            row = manifest[keys[0]]
            assert (meta["url"], meta["label"], meta["license"], meta["license_code"]) == (row.url, row.label, "CC BY 4.0", "CC_BY_4_0")
            assert meta["occurrence_key"] == row.occurrence_key and meta["width"] == meta["height"] == 1


def test_tfrecord_examples_carry_tensorflow_image_keys(datasets):
    samples = _read_tfrecord(datasets["tfrecord"])
    assert {(s["format"], s["width"]) for s in samples.values()} == {("JPEG", 1)}
    assert all(s["sha"] == hashlib.sha256(s["image"]).hexdigest() for s in samples.values())


def test_imagefolder_metadata_names_every_file_with_its_class_index(datasets):
    output = datasets["imagefolder"]
    classes = json.loads((output / "classes.json").read_text(encoding="utf-8"))
    manifest = _manifest_by_key(output)
    seen = {}
    for split in ("train", "test"):
        for line in (output / split / "metadata.jsonl").read_text(encoding="utf-8").splitlines():
            meta = json.loads(line)
            row = manifest[meta["key"]]
            assert (output / split / meta["file_name"]).read_bytes() and f"{split}/{meta['file_name']}" == row.path
            assert meta["class_index"] == classes[meta["label"]] == row.class_index and meta["label"] == row.label
            seen[meta["key"]] = hashlib.sha256((output / row.path).read_bytes()).hexdigest()
    assert seen == {key: row.sha256 for key, row in manifest.items()}
    assert classes == json.loads((datasets["webdataset"] / "classes.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_hugging_face_imagefolder_loads_images_with_labels_and_metadata(datasets, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from datasets import load_dataset

    output = datasets["imagefolder"]
    manifest = _manifest_by_key(output)
    loaded = load_dataset("imagefolder", data_dir=str(output), cache_dir=str(output.parent / "hf-cache"))
    assert set(loaded) == {"train", "test"}
    for split, rows in loaded.items():
        for row in rows:
            record = manifest[row["key"]]
            expected = (split, record.label, record.class_index, "CC BY 4.0")
            assert (record.split, row["label"], row["class_index"], row["license"]) == expected
            assert row["image"].size == (1, 1)
    assert sum(len(rows) for rows in loaded.values()) == RECORDS


@pytest.mark.parametrize("output_format", ["webdataset", "tfrecord", "parquet"])
def test_a_rerun_from_scratch_with_the_same_seed_gives_byte_identical_shards(datasets, media, tmp_path, monkeypatch, output_format):
    again = tmp_path / "again"
    monkeypatch.setenv("PYTHONPATH", str(PROJECT))  # the worker processes import beam_gbif
    for name, value in NO_METADATA_ENV.items():
        monkeypatch.setenv(name, value)
    # Two worker processes this time: the order comes from the seeded rank, not from the runner.
    multi = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")
    assert run(_argv(_listing(media, tmp_path), str(again), output_format, *multi)) == 0
    first = datasets[output_format]
    suffix = {"webdataset": ".tar", "tfrecord": ".tfrecord", "parquet": ".parquet"}[output_format]
    names = [p.relative_to(first) for p in _shards(first, suffix)]
    assert names == [p.relative_to(again) for p in _shards(again, suffix)]
    for name in names:
        assert (again / name).read_bytes() == (first / name).read_bytes(), f"{name} byte-identical"


@pytest.mark.parametrize(("extra", "message"), [
    (["--shard_size=0"], "--shard_size must be a whole number of records, at least 1"),
    (["--output_format=zip"], "--output_format must be one of imagefolder, webdataset, tfrecord, parquet"),
])
def test_bad_format_options_are_one_clear_error_before_any_request(media, tmp_path, capsys, extra, message):
    listing = _listing(media, tmp_path, count=3, prefix="bad")
    media.reset_hits()
    output = tmp_path / "out"
    assert run([*_argv(listing, str(output), "webdataset"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert media.total_hits == 0 and not output.exists()


def test_webdataset_on_gcs_is_written_by_single_uploads(media, tmp_path):
    from beam_gbif.io.store import store_for
    from beam_gbif.testing.gcs_emulator import GcsEmulator

    with GcsEmulator(bucket="formats") as gcs:
        output = f"gs://{gcs.bucket}/ds"
        assert run(_argv(_listing(media, tmp_path, count=9, prefix="gcs"), output, "webdataset")) == 0
        store = store_for(output)
        files = store.list()
        shards = [rel for rel in files if rel.endswith(".tar")]
        manifest = {row.key: row for row in read_manifest(output)}
        assert not [rel for rel in files if rel.startswith("_staging/")] and "classes.json" in files
        keys = set()
        for shard in shards:
            local = tmp_path / shard.replace("/", "_")
            local.write_bytes(store.read(shard))
            with tarfile.open(local) as tar:
                for member in tar.getmembers():
                    if member.name.endswith(".jpg"):
                        key = member.name[:-4]
                        keys.add(key)
                        assert hashlib.sha256(tar.extractfile(member).read()).hexdigest() == manifest[key].sha256
                        assert manifest[key].shard == shard
    assert keys == set(manifest) and len(keys) == 9


def _staged(output: Path) -> set[str]:
    staging = output / "_staging"
    return {p.stem for p in staging.rglob("*.jpg") if not p.name.startswith(".")} if staging.exists() else set()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_webdataset_killed_with_sigkill_then_rerun_completes_without_fetching_again(tmp_path):
    output = tmp_path / "ds"
    count = 300
    with MediaServer(latency=0.05) as media:
        listing = _listing(media, tmp_path, count=count, prefix="kill")
        argv = [*_argv(listing, str(output), "webdataset"), "--shard_size=50", "--max_concurrency=8", "--per_host_concurrency=8"]
        env = {**os.environ, **NO_METADATA_ENV, "PYTHONPATH": str(PROJECT)}
        process = subprocess.Popen([sys.executable, "-m", "pipelines.gbif_media", *argv], env=env, cwd=str(PROJECT),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        kill_when(process, lambda: len(_staged(output)) >= 40)
        staged = _staged(output)
        assert 40 <= len(staged) < count and not list(output.rglob("*.tar")), "killed while downloading"
        first_hits = media.total_hits
        media.reset_hits()
        assert run(argv) == 0
        again = {path.rsplit("/", 1)[1] for path in media.hits}

    keys_by_name = {f"kill{i}.jpg": hashlib.sha1(media.url(f"kill{i}").encode()).hexdigest() for i in range(count)}
    assert not {keys_by_name[name] for name in again} & staged, "no staged download fetched again"
    assert len(again) <= count - len(staged) + 0 and first_hits - len(staged) <= 8 + 1, "at most the requests in flight"
    samples = _read_webdataset(output)
    manifest = _manifest_by_key_any(output)
    assert set(samples) == set(keys_by_name.values()) == set(manifest)
    assert all(hashlib.sha256(s["image"]).hexdigest() == manifest[k].sha256 for k, s in samples.items())
    assert not [p for p in output.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")], "no temp or partial file"
    assert not (output / "_staging").exists()


def _manifest_by_key_any(output: Path) -> dict[str, Any]:
    return {row.key: row for row in read_manifest(str(output))}


def test_shard_cuts_and_names_without_splits():
    from beam_gbif.core.records import MediaRecord
    from beam_gbif.core.shards import cut_shards
    from beam_gbif.transforms.dataset import DatasetSettings, plan_shards

    for count in range(0, 30):
        for size in (1, 3, 10):
            cuts = cut_shards(count, size)
            assert [end - start for start, end in cuts][:-1] == [size] * (len(cuts) - 1)
            assert sum(end - start for start, end in cuts) == count and all(end > start for start, end in cuts)
    records = [MediaRecord(url=f"http://127.0.0.1/{i}.jpg", label="x", occurrence_key=i, path=f"x/{i}.jpg") for i in range(5)]
    sharded = list(plan_shards(("", records), DatasetSettings(output="/tmp/unused", output_format="webdataset", shard_size=2)))
    assert [(name, len(chunk)) for name, chunk in sharded] == [("data-000000.tar", 2), ("data-000001.tar", 2), ("data-000002.tar", 1)]
    (single,) = plan_shards(("", records), DatasetSettings(output="/tmp/unused"))
    assert single[0] == "metadata.jsonl" and [r.path for r in single[1]] == sorted(r.path for r in records)


def test_a_rerun_into_the_same_output_leaves_only_its_own_shards(media, tmp_path):
    listing = _listing(media, tmp_path, count=9, prefix="again")
    output = tmp_path / "ds"
    assert run(_argv(listing, str(output), "tfrecord", "--shard_size=2")) == 0
    before = {p.relative_to(output).as_posix() for p in _shards(output, ".tfrecord")}
    (output / "train" / "notes.txt").write_text("mine")
    assert run(_argv(listing, str(output), "tfrecord", "--shard_size=100")) == 0
    after = {p.relative_to(output).as_posix() for p in _shards(output, ".tfrecord")}
    assert after == {row.shard for row in read_manifest(str(output))} and len(after) < len(before)
    assert sum(_check_tfrecord_framing(p.read_bytes()) for p in _shards(output, ".tfrecord")) == 9
    assert (output / "train" / "notes.txt").read_text() == "mine", "only shard names of this format are removed"
