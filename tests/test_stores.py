"""The local store: atomic writes, listing, describe, path safety, pickling."""

from __future__ import annotations

import hashlib
import os
import pickle

import pytest

from beam_gbif.io.local_files import is_temp_name, temp_target
from beam_gbif.io.store import LocalStore, StoreError, store_for


def test_write_read_list_describe_delete(tmp_path):
    store = store_for(tmp_path / "root")
    assert isinstance(store, LocalStore) and store.is_local
    store.write_atomic("a/b/x.jpg", b"one")
    store.write_atomic("a/y.jpg", b"two")
    store.write_atomic("top.txt", b"three")
    store.write_atomic("a/y.jpg", b"two again")  # replaces whole
    assert store.read("a/y.jpg") == b"two again"
    assert store.list() == ["a/b/x.jpg", "a/y.jpg", "top.txt"]
    assert store.list("a") == ["a/b/x.jpg", "a/y.jpg"]
    assert store.list_dir("a") == ["y.jpg"]
    assert store.list_dir("a", startswith="z") == [] and store.list_dir("nope") == []
    assert store.describe("top.txt") == (5, hashlib.sha256(b"three").hexdigest())
    store.delete("top.txt")
    store.delete("top.txt")
    assert store.list() == ["a/b/x.jpg", "a/y.jpg"]
    assert store.uri("a/y.jpg") == os.path.join(str((tmp_path / "root").resolve()), "a", "y.jpg")


def test_no_temp_file_left_when_a_write_fails(tmp_path):
    store = store_for(tmp_path)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(StoreError, match="not a folder"):
        store.write_atomic("blocker/x.jpg", b"data")

    store.write_atomic("ok/first.jpg", b"x")
    with pytest.raises(TypeError):
        store.write_atomic("ok/second.jpg", object())  # type: ignore[arg-type]
    assert sorted(os.listdir(tmp_path / "ok")) == ["first.jpg"]


def test_temp_names_are_hidden_and_map_back_to_their_file():
    assert is_temp_name(".abc.jpg.0123456789ab.tmp") and not is_temp_name("abc.jpg")
    assert temp_target(".abc.jpg.0123456789ab.tmp") == "abc.jpg"


@pytest.mark.parametrize("rel", ["../escape.jpg", "a/../../escape.jpg", "/etc/passwd"])
def test_paths_cannot_leave_the_root(tmp_path, rel):
    with pytest.raises(StoreError, match="inside the dataset root"):
        store_for(tmp_path).write_atomic(rel, b"x")


def test_bad_roots_are_clear_errors(tmp_path):
    target = tmp_path / "f"
    target.write_text("x")
    with pytest.raises(StoreError, match="exists and is not a folder"):
        store_for(target)
    with pytest.raises(StoreError, match="unsupported dataset root"):
        store_for("s3://bucket/x")
    with pytest.raises(StoreError, match="empty"):
        store_for("")
    with pytest.raises(StoreError, match="no bucket"):
        store_for("gs:///prefix")


def test_stores_pickle(tmp_path):
    local = pickle.loads(pickle.dumps(store_for(tmp_path)))
    local.write_atomic("x", b"1")
    assert local.read("x") == b"1"
    gcs = pickle.loads(pickle.dumps(store_for("gs://bucket/some/prefix")))  # no client is created until used
    assert gcs.uri("a/b.jpg") == "gs://bucket/some/prefix/a/b.jpg"


def test_a_folder_removed_between_writes_is_made_again(tmp_path):
    # The store remembers the folders it made (one makedirs per folder, not per file); a folder
    # removed behind its back must not turn the next write into a failure.
    import shutil

    store = LocalStore(tmp_path / "ds")
    store.write_atomic("train/a/1.jpg", b"one")
    shutil.rmtree(tmp_path / "ds" / "train")
    store.write_atomic("train/a/2.jpg", b"two")
    assert (tmp_path / "ds" / "train" / "a" / "2.jpg").read_bytes() == b"two"
    assert not [p for p in (tmp_path / "ds").rglob("*") if is_temp_name(p.name)]


def test_temp_names_are_distinct_and_recognised_and_fsync_runs_only_when_asked(tmp_path, monkeypatch):
    from beam_gbif.io.fetch import DownloadSettings
    from beam_gbif.io.local_files import temp_name

    names = {temp_name("a.jpg") for _ in range(1000)}
    assert len(names) == 1000 and all(is_temp_name(n) and temp_target(n) == "a.jpg" for n in names)
    synced = []
    monkeypatch.setattr(os, "fsync", synced.append)
    store_for(tmp_path).write_atomic("a/1.jpg", b"x")  # default: temp + rename survives SIGKILL; no fsync
    assert synced == [] and not DownloadSettings(output=str(tmp_path)).fsync
    LocalStore(tmp_path, fsync=True).write_atomic("a/2.jpg", b"y" * 100_000)
    assert len(synced) == 1 and (tmp_path / "a" / "2.jpg").read_bytes() == b"y" * 100_000
    assert sorted(os.listdir(tmp_path / "a")) == ["1.jpg", "2.jpg"]
