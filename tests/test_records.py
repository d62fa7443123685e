"""The record: folder names that never escape, gbif-dl compatible basenames, a deterministic coder."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest

from beam_gbif.core.records import MediaRecord, safe_label_dir
from beam_gbif.transforms.coders import MediaRecordCoder
from beam_gbif.transforms.sampling.combiners import one_media_of_occurrence
from beam_gbif.transforms.sources.media_items import (
    DROPPED_MEDIA_NO_URL,
    DROPPED_MEDIA_OTHER_TYPE,
    DROPPED_NO_LABEL,
    EXCLUDED_BY_LICENSE,
    media_records,
)


@pytest.mark.parametrize("label", ["5352251", "Amanita_muscaria", "a.b-c"])
def test_safe_labels_are_their_own_folder(label):
    assert safe_label_dir(label) == label


@pytest.mark.parametrize("label", ["../../etc", "a/b", "..", ".", "", "Amanita muscaria (L.) Hook.", "x" * 300, "a\\b", "C:\\x", "ends."])
def test_unsafe_labels_become_one_safe_segment(label):
    folder = safe_label_dir(label)
    assert "/" not in folder and "\\" not in folder and folder not in (".", "..", "")
    assert not folder.startswith(".") and len(folder) <= 100


def test_distinct_labels_never_share_a_folder():
    labels = ["a/b", "a_b", "a b", "a:b", "A/B"]
    assert len({safe_label_dir(label) for label in labels}) == len(labels)


WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789")}
CONTROL_AND_DEVICE_LABELS = ["abc\n", "abc\r\n", "ab\tc", "abc\x7f", "abc\x85", "CON", "con", "nul.txt", "NUL.tar.gz", "Aux",
                             "COM0", "com9", "LPT1", "lpt9.jpg", "CON .txt", "COM\u00b9"]


@pytest.mark.parametrize("label", CONTROL_AND_DEVICE_LABELS)
def test_control_characters_and_windows_device_names_become_safe_folders(label):
    folder = safe_label_dir(label)
    assert folder != label
    assert all(0x20 <= ord(char) < 0x7F for char in folder)  # no control character survives, not even a trailing newline
    assert folder.split(".", 1)[0].rstrip(" ").upper() not in WINDOWS_DEVICES
    assert safe_label_dir(folder) == folder  # the fetch engine applies it again: a safe folder stays as it is


def test_labels_differing_only_by_control_characters_or_device_names_keep_their_own_folders():
    labels = ["abc", "abc\n", "abc\r\n", "abc\t", "CON", "CON\n", "con", "nul.txt", "nul_txt", "NUL.txt"]
    assert len({safe_label_dir(label) for label in labels}) == len(labels)


@pytest.mark.parametrize("label", ["CONSOLE", "nullable", "COM10", "LPT", "a.CON", "icon", "prn-2"])
def test_names_that_only_look_like_devices_are_kept(label):
    assert safe_label_dir(label) == label


def test_basename_is_sha1_of_url_like_gbif_dl():
    url = "https://example.org/a.jpg"
    assert MediaRecord(url=url, label="1", occurrence_key=1).basename == hashlib.sha1(url.encode()).hexdigest()


def test_coder_round_trips_and_is_deterministic():
    record = MediaRecord(url="http://h/é.jpg", label="Amanita muscaria", occurrence_key=7, stream=("a", "b"), split="train", bytes=12)
    coder = MediaRecordCoder()
    assert coder.decode(coder.encode(record)) == record
    assert coder.encode(record) == coder.encode(MediaRecord.from_dict(record.to_dict()))
    assert coder.is_deterministic()


def test_real_page_media_filtering(shared_data):
    page = json.loads((shared_data / "gbif-api" / "occurrence_search_taxonKey_3329049_offset_0.json").read_text())
    total: Counter = Counter()
    records = []
    for occurrence in page["results"]:
        found, dropped = media_records(occurrence, occurrence.get("media", []), label_field="speciesKey", stream_fields=["datasetKey"])
        records += found
        total.update(dropped)
    expected = sum(1 for o in page["results"] for m in o.get("media", []) if m.get("type") == "StillImage" and m.get("identifier"))
    assert len(records) == expected > 300  # arter.dk occurrences carry several images
    species_by_key = {o["key"]: str(o["speciesKey"]) for o in page["results"]}
    assert all(r.label == species_by_key[r.occurrence_key] for r in records)
    two = [o for o in page["results"] if len(o.get("media", [])) == 2][0]
    assert {r.url for r in records if r.occurrence_key == two["key"]} == {m["identifier"] for m in two["media"]}


def test_media_of_other_types_and_without_url_are_dropped_and_counted():
    occurrence = {"key": 5, "speciesKey": 42, "datasetKey": "d"}
    media = [
        {"type": "Sound", "identifier": "http://h/a.mp3"},
        {"type": "StillImage", "identifier": ""},
        {"format": "image/jpeg", "identifier": "http://h/b.jpg"},
        {"type": "StillImage", "identifier": "http://h/c.jpg", "license": "CC0"},
    ]
    records, dropped = media_records(occurrence, media, label_field="speciesKey")
    assert [r.url for r in records] == ["http://h/b.jpg", "http://h/c.jpg"]
    assert dropped == Counter({DROPPED_MEDIA_OTHER_TYPE: 1, DROPPED_MEDIA_NO_URL: 1})
    assert records[1].license == "CC0"


def test_occurrence_without_label_is_dropped_never_labelled_none():
    records, dropped = media_records({"key": 5, "speciesKey": None}, [{"type": "StillImage", "identifier": "u"}], label_field="speciesKey")
    assert records == [] and dropped[DROPPED_NO_LABEL] == 1


def test_one_media_per_occurrence_is_chosen_among_usable_licences_only():
    occurrence = {"key": 5, "speciesKey": 42}
    media = [{"type": "StillImage", "identifier": f"http://h/{i}.jpg", "license": lic}
             for i, lic in enumerate(["CC0", "All rights reserved", "http://creativecommons.org/licenses/by/4.0/", "CC BY-NC 4.0"])]
    every, _ = media_records(occurrence, media, label_field="speciesKey")
    picks = set()
    for seed in range(40):
        kept, dropped = media_records(occurrence, media, label_field="speciesKey", licenses={"CC0_1_0", "CC_BY_4_0"}, one_media_seed=seed)
        assert len(kept) == 1 and kept[0].license_code in {"CC0_1_0", "CC_BY_4_0"}
        assert dropped[EXCLUDED_BY_LICENSE] == 2
        picks.add(kept[0].url)
        usable = [r for r in every if r.license_code in {"CC0_1_0", "CC_BY_4_0"}]
        assert kept[0] == one_media_of_occurrence(usable, seed), "the same pick as SampleStreams' OneMediaPerOccurrence"
    assert picks == {"http://h/0.jpg", "http://h/2.jpg"}, "the seed decides, over every usable media"
